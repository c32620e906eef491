"""BrushNet (Ju et al., 2024) on Stable Diffusion 1.5 or SDXL.

Weights (variant `sd15`, the default): the official `segmentation_mask_brushnet_ckpt` folder (config.json,
diffusion_pytorch_model.safetensors) and a diffusers-format SD 1.5 base, `realisticVisionV60B1_v51VAE` as in
the official examples. Variant `sdxl`: `segmentation_mask_brushnet_ckpt_sdxl_v1` on an SDXL base folder
(`stable-diffusion-xl-base-1.0` by default). The checkpoints come from the BrushNet release (TencentARC/BrushNet);
the SD 1.5 one is mirrored at https://huggingface.co/Sanster/brushnet_segmentation_mask.

Input contract: RGB images and masks (hole = 255 inside brgen), sides multiples of 8; the photo is resized
to the working size (about 512x512 pixels for SD 1.5, 1024x1024 for SDXL by default) and the output
resized back. Defaults follow the official example: UniPC scheduler, 50 steps, guidance 7.5,
conditioning scale 1.0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from inpainters.base import MethodError
from inpainters.brushnet_model import load_brushnet
from inpainters.brushnet_pipeline import BrushNetPipeline
from inpainters.diffusion import CALL_PARAMETERS, DIFFUSION_PARAMETERS, DiffusionInpainter, load_pretrained, make_scheduler, optimize_modules, seeded_generators
from inpainters.prompts import Prompt
from inpainters.weights import resolve

# variant -> (registry components of the checkpoint and the base model, working size)
VARIANTS = {
    "sd15": ("brushnet", "base", 512),
    "sdxl": ("brushnet_sdxl", "base_sdxl", 1024),
}


class BrushNetInpainter(DiffusionInpainter):
    name = "brushnet"
    token = "BrushNet"
    parameters = {**DIFFUSION_PARAMETERS, "base": None, "variant": "sd15", "conditioning_scale": 1.0, "scheduler": "unipc", "working_size": None}
    call_parameters = CALL_PARAMETERS | {"conditioning_scale"}

    def __init__(self, params=None, device="auto"):
        variant = (params or {}).get("variant", "sd15")
        if variant not in VARIANTS:
            raise MethodError(f"brushnet: `variant` must be one of {', '.join(VARIANTS)}, got {variant!r}")
        super().__init__(params, device)
        scale = self.params["conditioning_scale"]
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale < 0:
            raise MethodError(f"brushnet: `conditioning_scale` must be a number >= 0, got {scale!r}")

    def default_working_size(self) -> int:
        return VARIANTS[self.params["variant"]][2]

    def weight_folders(self) -> dict[str, Path]:
        checkpoint, base, _ = VARIANTS[self.params["variant"]]
        return {
            "brushnet": resolve(self.name, checkpoint, self.params["weights"]),
            "base": resolve(self.name, base, self.params["base"], parameter="base"),
        }

    def build_pipeline(self) -> BrushNetPipeline:
        base = load_base_pipeline(self.folders["base"], self.params["variant"] == "sdxl", self.torch_dtype())
        return self.assemble(base, load_brushnet(self.folders["brushnet"], self.torch_dtype()))

    def assemble(self, base, brushnet) -> BrushNetPipeline:
        """Join a loaded base pipeline and BrushNet on the device, with the recipe's scheduler and speed settings."""
        check_pairing(brushnet, base.unet, self.folders)
        prepare_base(base, self.params["scheduler"], self.device)
        brushnet.to(self.device)
        optimize_modules([base.unet, brushnet], self.device, compile_modules=False)
        return BrushNetPipeline(base, brushnet, compile_modules=self.params["compile"])

    def generate(self, images: np.ndarray, holes: np.ndarray, prompts: list[Prompt], seeds: list[int]) -> np.ndarray:
        return self.pipeline(
            images,
            holes,
            [prompt.text for prompt in prompts],
            [prompt.negative for prompt in prompts],
            seeded_generators(seeds),
            self.params["steps"],
            float(self.params["guidance"]),
            float(self.params["conditioning_scale"]),
        )


def load_base_pipeline(folder: Path, xl: bool, dtype: torch.dtype):
    """Load a diffusers SD 1.5 or SDXL folder with no safety checker and no watermark."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if xl:
        return load_pretrained(StableDiffusionXLPipeline, folder, dtype, add_watermarker=False)
    return load_pretrained(StableDiffusionPipeline, folder, dtype, safety_checker=None, requires_safety_checker=False)


def prepare_base(base, scheduler: str | None, device: str) -> None:
    """Set the recipe's scheduler and move a base pipeline to `device`.

    A VAE whose config sets `force_upcast` (SDXL's overflows in float16) stays in float32 when the rest is float16.
    """
    base.scheduler = make_scheduler(scheduler, base.scheduler)
    base.to(device)
    if base.unet.dtype == torch.float16 and getattr(base.vae.config, "force_upcast", False):
        base.vae.to(torch.float32)
    base.set_progress_bar_config(disable=True)


def check_pairing(brushnet, unet, folders: dict[str, Path]) -> None:
    """Raise MethodError when a BrushNet checkpoint was made for another base model (SD 1.5 and SDXL differ)."""
    mine = (tuple(brushnet.config.block_out_channels), brushnet.config.addition_embed_type)
    theirs = (tuple(unet.config.block_out_channels), unet.config.addition_embed_type)
    if mine != theirs:
        raise MethodError(
            f"BrushNet checkpoint {folders.get('brushnet')} (blocks {mine[0]}, {mine[1] or 'no'} added conditioning) does not fit "
            f"the base model {folders.get('base')} (blocks {theirs[0]}, {theirs[1] or 'no'} added conditioning); "
            "use variant sdxl with an SDXL base and variant sd15 with an SD 1.5 base"
        )
