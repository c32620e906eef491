"""Images per second of LaMa and MAT through brgen's `inpaint()`, at batch 1 and at the fastest batch size.

Both models get random weights (speed does not depend on the values) and run through the same loading code
as the official files: LaMa as a TorchScript trace of `inpainters.lama_arch` with big-lama.pt's call
signature, MAT as a state dict loaded with weights_only=True and strict=True. Inputs are 512x512 crops of
the bundled photos with a rectangular hole covering a third of the image.

On a GPU the models are full size. On a CPU the script runs tiny models by default, to check that it works;
pass --full for the full-size models (slow). Two figures per row: `inpaint()` includes the conversion
from and to uint8 arrays on the host, `model` times the forward pass on tensors already on the device.

    python benchmarks/lama_mat_speed.py                      # GPU if present, else CPU with tiny models
    python benchmarks/lama_mat_speed.py --device cuda --batches 1,4,8,16,32
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inpainters.base import InpaintRequest, resolve_device  # noqa: E402
from inpainters.lama import LaMa  # noqa: E402
from inpainters.lama_arch import FFCResNetGenerator, LamaInpaintingModel  # noqa: E402
from inpainters.mat import MAT  # noqa: E402
from inpainters.mat_arch import TINY_CONFIG, MATConfig, MATGenerator, RandomSource  # noqa: E402
from manifests import data_path  # noqa: E402


def photo_requests(count: int, size: int) -> list[InpaintRequest]:
    from PIL import Image

    photos = []
    for name in ("000000142238.jpg", "000000439180.jpg"):
        with Image.open(data_path("sample", "images", name)) as image:
            photos.append(np.asarray(image.convert("RGB").resize((size, size))))
    mask = np.zeros((size, size), np.uint8)
    mask[size // 4 : size * 3 // 4, size // 5 : size * 4 // 5] = 255
    return [InpaintRequest(f"item{index}", photos[index % 2], mask, seed=index) for index in range(count)]


def build_lama(folder: Path, device: str, tiny: bool) -> LaMa:
    generator = FFCResNetGenerator(ngf=8, n_blocks=1) if tiny else FFCResNetGenerator()
    model = LamaInpaintingModel(generator).eval().to(device)
    path = folder / "big-lama.pt"
    example = (torch.rand(1, 3, 64, 64, device=device), torch.ones(1, 1, 64, 64, device=device))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript is deprecated in torch 2.10+, and big-lama.pt is TorchScript
        torch.jit.trace(model, example, check_trace=False).save(str(path))
    lama = LaMa({"weights": str(path)}, device=device)
    lama.load()
    return lama


def build_mat(folder: Path, device: str, tiny: bool, dtype: str) -> MAT:
    config = TINY_CONFIG if tiny else MATConfig()
    path = folder / f"mat-{dtype}.pth"
    torch.save(MATGenerator(config).state_dict(), path)
    sized = type("SizedMAT", (MAT,), {"config": config})
    mat = sized({"weights": str(path), "dtype": dtype}, device=device)
    mat.load()
    return mat


def images_per_second(run, batch: int, repeats: int, device: str) -> float:
    run()  # warm-up: kernel selection, allocator growth
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    synchronize(device)
    return batch * repeats / (time.perf_counter() - start)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def model_call(inpainter, requests):
    """Return a call of the forward pass alone, on tensors prepared once on the device."""
    batch = len(requests)
    size = requests[0].image.shape[0]
    device = inpainter.device
    if isinstance(inpainter, LaMa):
        image = torch.rand(batch, 3, size, size, device=device)
        mask = torch.from_numpy(np.stack([request.mask > 127 for request in requests])).to(device)[:, None].float()
        return lambda: inpainter.model(image, mask)
    side = -(-size // inpainter.size_multiple) * inpainter.size_multiple
    dtype = next(inpainter.model.parameters()).dtype
    image = torch.rand(batch, 3, side, side, device=device, dtype=dtype) * 2 - 1
    keep = torch.ones(batch, 1, side, side, device=device, dtype=dtype)
    keep[:, :, side // 4 : side * 3 // 4, side // 5 : side * 4 // 5] = 0
    seeds = [request.seed for request in requests]
    return lambda: inpainter.model(image, keep, RandomSource(seeds), "const")


def measure(label: str, inpainter, size: int, batches: list[int], repeats: int) -> list[dict]:
    rows = []
    for batch in batches:
        requests = photo_requests(batch, size)
        try:
            with torch.inference_mode():
                end_to_end = images_per_second(lambda: inpainter.inpaint(requests), batch, repeats, inpainter.device)
                forward = images_per_second(model_call(inpainter, requests), batch, repeats, inpainter.device)
        except torch.cuda.OutOfMemoryError:
            print(f"{label}: batch {batch} does not fit in GPU memory; larger batches skipped", file=sys.stderr)
            torch.cuda.empty_cache()
            break
        rows.append({"method": label, "batch": batch, "inpaint": end_to_end, "model": forward})
        print(f"{label:<16} batch {batch:>3}: inpaint() {end_to_end:8.2f} img/s, model {forward:8.2f} img/s", file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda or cuda:N")
    parser.add_argument("--size", type=int, default=512, help="side of the square test images, pixels (default 512)")
    parser.add_argument("--batches", default=None, help="comma-separated batch sizes (default: 1,2,4,8,16,32 on GPU, 1,2,4 on CPU)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per batch size (default: 10 on GPU, 2 on CPU)")
    parser.add_argument("--full", action="store_true", help="full-size models on a CPU too (default on a GPU)")
    parser.add_argument("--methods", default="lama,mat", help="comma-separated: lama, mat")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    logging.basicConfig(level=logging.ERROR)  # random weights are never the official file: silence that warning
    device = resolve_device(args.device)
    gpu = device.startswith("cuda")
    tiny = not gpu and not args.full
    batches = [int(value) for value in (args.batches or ("1,2,4,8,16,32" if gpu else "1,2,4")).split(",")]
    repeats = args.repeats or (10 if gpu else 2)
    hardware = torch.cuda.get_device_name(device) if gpu else f"{platform.processor() or platform.machine()}, torch threads: {torch.get_num_threads()}"

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        if "lama" in args.methods:
            rows += measure("lama", build_lama(Path(folder), device, tiny), args.size, batches, repeats)
        if "mat" in args.methods:
            for dtype in ("float32", "float16") if gpu else ("float32",):
                rows += measure(f"mat {dtype}", build_mat(Path(folder), device, tiny, dtype), args.size, batches, repeats)

    print(f"\n{'tiny' if tiny else 'full-size'} models, {args.size}x{args.size}, device {device} ({hardware}), torch {torch.__version__}\n")
    print("| method | batch 1 inpaint() | batch 1 model | best batch | best inpaint() | best model |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label in dict.fromkeys(row["method"] for row in rows):
        own = [row for row in rows if row["method"] == label]
        single = next((row for row in own if row["batch"] == 1), own[0])
        best = max(own, key=lambda row: row["inpaint"])
        print(f"| {label} | {single['inpaint']:.2f} | {single['model']:.2f} | {best['batch']} | {best['inpaint']:.2f} | {best['model']:.2f} |")


if __name__ == "__main__":
    main()
