"""Images per second of brgen's batched SDXL, BrushNet and PowerPaint against plain one-image pipeline calls.

On a GPU every model is built at full size with random weights (no download): SDXL inpainting at
1024x1024, BrushNet and PowerPaint on SD 1.5 at 512x512. In the same run the script times

- brgen: the method's `inpaint` on batches of `--batch-size` photos, in the precision brgen picks
  (bfloat16 on GPUs that support it), optionally with torch.compile;
- plain: one image per pipeline call in float32, diffusers' default precision: diffusers'
  StableDiffusionXLInpaintPipeline for SDXL, brgen's BrushNet pipeline for BrushNet and PowerPaint (no
  other implementation runs with current diffusers);
- plain-same-dtype: one image per call in brgen's precision, which isolates the gain of batching.

Without a GPU it builds tiny models instead, to show that the script works. Those figures do not
measure GPU speed. Random weights run the same operations as trained ones, so the timings hold for them.

    python benchmarks/bench_text_guided.py                      # GPU: full size; CPU: tiny models
    python benchmarks/bench_text_guided.py --methods sdxl --images 16 --batch-size 8 --steps 30 --compile
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import tiny_diffusion  # noqa: E402  (tests/tiny_diffusion.py: tiny weight folders and the character tokenizer)
from inpainters import registry  # noqa: E402
from inpainters.base import InpaintRequest  # noqa: E402
from inpainters.brushnet_model import BrushNetModel, config_from_unet  # noqa: E402

SD15_UNET = dict(block_out_channels=[320, 640, 1280, 1280], layers_per_block=2, cross_attention_dim=768, attention_head_dim=8, sample_size=64,
                 down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"], up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3)
SDXL_UNET = dict(block_out_channels=[320, 640, 1280], layers_per_block=2, cross_attention_dim=2048, attention_head_dim=[5, 10, 20],
                 transformer_layers_per_block=[1, 2, 10], use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=2816, sample_size=128, down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                 up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"])
VAE = dict(block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=4, layers_per_block=2)
CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
              hidden_act="quick_gelu", projection_dim=768)
CLIP_BIG_G = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20, max_position_embeddings=77,
                  hidden_act="gelu", projection_dim=1280)


def full_size_parts(kind: str, dtype: torch.dtype, device: str, folder: Path) -> dict:
    """Build randomly initialised full-size components of an SD 1.5 or SDXL pipeline on `device`."""
    from diffusers import AutoencoderKL, DDIMScheduler, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = tiny_diffusion.write_tokenizer(folder / "tokenizer")
    with torch.device(device):
        if kind == "sd15":
            return dict(unet=UNet2DConditionModel(**SD15_UNET).to(dtype), vae=AutoencoderKL(**VAE, scaling_factor=0.18215).to(dtype),
                        text_encoder=CLIPTextModel(CLIPTextConfig(**CLIP_L)).to(dtype), tokenizer=tokenizer,
                        scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1, clip_sample=False))
        in_channels = 9 if kind == "sdxl-inpainting" else 4
        return dict(unet=UNet2DConditionModel(**SDXL_UNET, in_channels=in_channels).to(dtype),
                    vae=AutoencoderKL(**VAE, scaling_factor=0.13025, force_upcast=True).to(dtype),
                    text_encoder=CLIPTextModel(CLIPTextConfig(**CLIP_L)).to(dtype),
                    text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_BIG_G)).to(dtype), tokenizer=tokenizer, tokenizer_2=tokenizer,
                    scheduler=EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1))


def full_size_pipeline(method: str, inpainter, dtype: torch.dtype, folder: Path):
    """Build the method's pipeline at full size with random weights, assembled by brgen's own code."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLInpaintPipeline

    if method == "sdxl":
        return inpainter.assemble(StableDiffusionXLInpaintPipeline(**full_size_parts("sdxl-inpainting", dtype, inpainter.device, folder), add_watermarker=False))
    parts = full_size_parts("sd15", dtype, inpainter.device, folder)
    base = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    with torch.device(inpainter.device):
        brushnet = BrushNetModel.from_config(config_from_unet(base.unet.config, cross_attention=method == "powerpaint")).to(dtype)
    if method == "brushnet":
        return inpainter.assemble(base, brushnet)
    from transformers import AddedToken, CLIPTextConfig, CLIPTextModel

    from inpainters.powerpaint import task_token_names

    tokenizer = tiny_diffusion.write_tokenizer(folder / "tokenizer_powerpaint")
    tokenizer.add_tokens([AddedToken(name, normalized=False) for name in task_token_names()])
    with torch.device(inpainter.device):
        text_encoder = CLIPTextModel(CLIPTextConfig(**{**CLIP_L, "vocab_size": CLIP_L["vocab_size"] + 30})).to(dtype)
    return inpainter.assemble(base, brushnet, tokenizer, text_encoder)


def tiny_weights(method: str, folder: Path) -> dict:
    """Write tiny weight folders and return the parameters that point at them (for the CPU check)."""
    if method == "sdxl":
        return {"weights": str(tiny_diffusion.write_sdxl_inpainting(folder / "sdxl"))}
    if method == "brushnet":
        base = tiny_diffusion.write_sd15(folder / "sd15")
        return {"weights": str(tiny_diffusion.write_brushnet(folder / "brushnet", base)), "base": str(base)}
    return {"weights": str(tiny_diffusion.write_powerpaint(folder / "powerpaint"))}


def requests(count: int, size: int) -> list[InpaintRequest]:
    rng = np.random.default_rng(0)
    made = []
    for index in range(count):
        mask = np.zeros((size, size), np.uint8)
        mask[size // 4 : 3 * size // 4, size // 8 : 7 * size // 8] = 255
        region = {"kind": "Stuff", "classes": [{"id": 187, "name": "sky-other-merged", "pixels": 1}], "bbox": [0, 0, size, size]}
        made.append(InpaintRequest(f"image{index}", rng.integers(0, 256, (size, size, 3), dtype=np.uint8), mask, index, region))
    return made


def images_per_second(inpainter, items: list[InpaintRequest], batch_size: int) -> float:
    inpainter.inpaint(items[:batch_size])  # warm-up (and compilation)
    if inpainter.device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    for start in range(0, len(items), batch_size):
        inpainter.inpaint(items[start : start + batch_size])
    if inpainter.device.startswith("cuda"):
        torch.cuda.synchronize()
    return len(items) / (time.perf_counter() - started)


def plain_sdxl_images_per_second(inpainter, items: list[InpaintRequest], dtype: torch.dtype, folder: Path) -> float:
    """Time one diffusers StableDiffusionXLInpaintPipeline call per image in `dtype`, with the pipeline's defaults otherwise."""
    from diffusers import StableDiffusionXLInpaintPipeline
    from PIL import Image

    if inpainter.params["weights"]:
        pipeline = StableDiffusionXLInpaintPipeline.from_pretrained(inpainter.params["weights"], torch_dtype=dtype, local_files_only=True)
    else:
        pipeline = StableDiffusionXLInpaintPipeline(**full_size_parts("sdxl-inpainting", dtype, inpainter.device, folder))
    pipeline.to(inpainter.device)
    pipeline.set_progress_bar_config(disable=True)
    size = inpainter.working_size(*items[0].image.shape[:2])

    def call(item: InpaintRequest) -> None:
        pipeline(prompt="a photo of sky", image=Image.fromarray(item.image), mask_image=Image.fromarray(item.mask), height=size[0], width=size[1],
                 num_inference_steps=inpainter.params["steps"], generator=torch.Generator("cpu").manual_seed(item.seed))

    call(items[0])
    if inpainter.device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    for item in items:
        call(item)
    if inpainter.device.startswith("cuda"):
        torch.cuda.synchronize()
    return len(items) / (time.perf_counter() - started)


def run(method: str, args, folder: Path) -> dict:
    gpu = args.device.startswith("cuda")
    size = 64
    if gpu:
        size = 1024 if method == "sdxl" else 512
    common = {"steps": args.steps, "working_size": [size, size], "device": args.device, "prompt": "a photo of {classes}", "negative_prompt": "blurry", "perturbation": 0.0}
    weights = {} if gpu else tiny_weights(method, folder)
    batched = registry.get(method)({**weights, **common, "compile": args.compile, "batch_size": args.batch_size})
    items = requests(args.images, size)
    dtype = batched.torch_dtype()

    def measure(inpainter, batch_size: int, precision: torch.dtype) -> float:
        if gpu:
            inpainter.pipeline = full_size_pipeline(method, inpainter, precision, folder)
        else:
            inpainter.check()
            inpainter.load()
        figure = images_per_second(inpainter, items, batch_size)
        inpainter.pipeline = None
        if gpu:
            torch.cuda.empty_cache()
        return figure

    result = {"method": method, "size": size, "steps": args.steps, "images": args.images, "batch_size": args.batch_size, "dtype": str(dtype).replace("torch.", "")}
    result["brgen"] = measure(batched, args.batch_size, dtype)
    same_dtype = registry.get(method)({**weights, **common, "batch_size": 1, "dtype": result["dtype"]})
    result["plain_same_dtype"] = measure(same_dtype, 1, dtype)
    plain = registry.get(method)({**weights, **common, "batch_size": 1, "dtype": "float32"})
    if method == "sdxl":
        if not gpu:
            plain.check()
        result["plain_float32"] = plain_sdxl_images_per_second(plain, items, torch.float32, folder)
    else:
        result["plain_float32"] = measure(plain, 1, torch.float32)
    result["speedup_vs_plain_float32"] = result["brgen"] / result["plain_float32"]
    result["speedup_vs_plain_same_dtype"] = result["brgen"] / result["plain_same_dtype"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="sdxl,brushnet,powerpaint", help="comma-separated methods (default: all three)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device (default: cuda if visible)")
    parser.add_argument("--images", type=int, default=None, help="images timed per path (default: 16 on GPU, 4 on CPU)")
    parser.add_argument("--batch-size", type=int, default=None, help="brgen's batch size (default: 8 on GPU, 2 on CPU)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: 30 on GPU, 2 on CPU)")
    parser.add_argument("--compile", action="store_true", help="compile brgen's UNet (and BrushNet) with torch.compile")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    gpu = args.device.startswith("cuda")
    args.images = args.images or (16 if gpu else 4)
    args.batch_size = args.batch_size or (8 if gpu else 2)
    args.steps = args.steps or (30 if gpu else 2)
    if not gpu:
        torch.set_num_threads(1)

    machine = torch.cuda.get_device_name() if gpu else f"{platform.processor() or platform.machine()} CPU, tiny models"
    print(f"# {date.today()}  {machine}  torch {torch.__version__}  steps {args.steps}  images {args.images}  batch {args.batch_size}  compile {args.compile}")
    print(f"{'method':<11} {'size':>5} {'dtype':>9} {'brgen img/s':>12} {'plain fp32':>11} {'plain dtype':>12} {'x fp32':>7} {'x dtype':>8}")
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for method in args.methods.split(","):
            result = run(method, args, Path(scratch) / method)
            results.append(result)
            print(f"{method:<11} {result['size']:>5} {result['dtype']:>9} {result['brgen']:>12.3f} {result['plain_float32']:>11.3f} "
                  f"{result['plain_same_dtype']:>12.3f} {result['speedup_vs_plain_float32']:>7.2f} {result['speedup_vs_plain_same_dtype']:>8.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "torch": torch.__version__, "results": results}, indent=1))


if __name__ == "__main__":
    main()
