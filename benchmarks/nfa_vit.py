"""Benchmark NFA-ViT: training-step time against plain SegFormer MiT-b2, loader throughput against bare PNG decoding.

Both figures are ratios measured in one run, so the machine's speed cancels out.

1. Training step: two models take forward, BCE loss, backward and an AdamW step on the same random
   batch. One is a full-size NFA-ViT (MiT-b0 noise branch, MiT-b2 image branch, 17-layer DnCNN). The other
   is a plain SegFormer with a MiT-b2 encoder and its all-MLP decoder (transformers'
   SegformerForSemanticSegmentation, one output channel). Timings alternate between the two models, and
   the medians are compared. Weights are random because speed does not depend on them.
2. Loader: the sample photos become a release folder with as many authentic images as forgeries, as in
   BR-Gen's training list, all PNG. The baseline is a DataLoader that only decodes, with cv2.imread,
   every PNG file a sample reads: the image, and the mask of a forgery. It is compared with brgen's
   ForgeryDataset for evaluation (decode, threshold the mask, resize to 512) and for training (with the
   augmentations). All loaders use the same number of worker processes. The fastest and the median of a
   few passes are printed, and the image-only decoding rate too.

Run on CPU at a reduced size (minutes):
    python benchmarks/nfa_vit.py --image-size 128 --batch-size 2 --steps 6 --workers 2
On a GPU (bf16 autocast):
    python benchmarks/nfa_vit.py --device cuda --image-size 512 --batch-size 16 --steps 20 --workers 8
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from transformers import SegformerForSemanticSegmentation

from detector.config import NFAViTConfig, mit_config
from detector.data import ForgeryDataset, make_loader, normalize, read_release_folder
from detector.model import NFAViT, nfa_vit_loss

SAMPLE_IMAGES = Path(__file__).resolve().parent.parent / "manifests" / "sample" / "images"


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="Torch device (default: cuda when visible, else cpu).")
    parser.add_argument("--image-size", type=int, default=128, help="Input side in pixels, a multiple of 32 (default 128; 512 in the published run).")
    parser.add_argument("--batch-size", type=int, default=2, help="Images per training step (default 2; 16 in the published run).")
    parser.add_argument("--steps", type=int, default=6, help="Timed steps per model after one warm-up step (default 6).")
    parser.add_argument("--images", type=int, default=48, help="Images written for the loader benchmark, half authentic, half forgeries (default 48).")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default 2).")
    parser.add_argument("--loader-batch-size", type=int, default=16, help="Images per batch of brgen's loader (default 16, as in training).")
    parser.add_argument("--repeats", type=int, default=4, help="Times each loader pass reads the images (default 4).")
    parser.add_argument("--passes", type=int, default=5, help="Timed loader passes per pipeline (default 5).")
    return parser.parse_args()


def time_step(step, device: torch.device, optimizer: torch.optim.Optimizer | None = None) -> float:
    """Return the seconds that `step()` and then an optimizer step take."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    step()
    if optimizer is not None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def benchmark_training_step(arguments: argparse.Namespace) -> dict:
    device = torch.device(arguments.device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    torch.manual_seed(0)
    nfa_vit = NFAViT(NFAViTConfig(image_size=arguments.image_size)).to(device).train()
    segformer_config = mit_config("b2")
    segformer_config.num_labels = 1
    segformer = SegformerForSemanticSegmentation(segformer_config).to(device).train()
    nfa_optimizer = torch.optim.AdamW([parameter for _, parameter in nfa_vit.trainable_parameters()], lr=1e-4)
    segformer_optimizer = torch.optim.AdamW(segformer.parameters(), lr=1e-4)

    size, batch = arguments.image_size, arguments.batch_size
    image = normalize(torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, device=device))
    mask = (torch.rand(batch, 1, size, size, device=device) > 0.7).float()
    label = torch.ones(batch, device=device)

    def nfa_step():
        with autocast:
            output = nfa_vit(image)
        nfa_vit_loss(output, mask, label).total.backward()

    def segformer_step():
        with autocast:
            logits = segformer(pixel_values=image).logits
        logits = F.interpolate(logits.float(), size=(size, size), mode="bilinear", align_corners=False)
        F.binary_cross_entropy_with_logits(logits, mask).backward()

    def noise_path():
        with torch.no_grad(), autocast:
            nfa_vit.noise_masks(nfa_vit.noise_extractor(image))

    time_step(nfa_step, device, nfa_optimizer)
    time_step(segformer_step, device, segformer_optimizer)
    nfa_times, segformer_times, noise_times = [], [], []
    for _ in range(arguments.steps):
        nfa_times.append(time_step(nfa_step, device, nfa_optimizer))
        segformer_times.append(time_step(segformer_step, device, segformer_optimizer))
        noise_times.append(time_step(noise_path, device))
    nfa, plain, noise = statistics.median(nfa_times), statistics.median(segformer_times), statistics.median(noise_times)
    return {"nfa_vit_s": nfa, "segformer_b2_s": plain, "noise_path_s": noise, "ratio": nfa / plain}


def write_release_folder(folder: Path, count: int) -> Path:
    """Write count/2 authentic PNGs and count/2 PNG forgeries with masks, cut and flipped from the sample photos."""
    rng = np.random.default_rng(0)
    photos = [cv2.imread(str(path), cv2.IMREAD_COLOR) for path in sorted(SAMPLE_IMAGES.glob("*.jpg"))]
    for name in ("Au", "Tp", "Gt"):
        (folder / name).mkdir(parents=True)
    for index in range(count):
        photo = photos[index % len(photos)]
        if index // len(photos) % 2:
            photo = photo[:, ::-1]
        photo = np.ascontiguousarray(photo)
        if index % 2 == 0:
            cv2.imwrite(str(folder / "Au" / f"real_{index:04d}.png"), photo)
            continue
        height, width = photo.shape[:2]
        mask = np.zeros((height, width), np.uint8)
        top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
        mask[top : top + height // 3, left : left + width // 3] = 255
        cv2.imwrite(str(folder / "Tp" / f"forgery_{index:04d}.png"), photo)
        cv2.imwrite(str(folder / "Gt" / f"forgery_{index:04d}_mask.png"), mask)
    return folder


class BareDecoding(Dataset):
    """PNG files decoded with cv2.imread and nothing else: the baseline of the loader benchmark."""

    def __init__(self, samples: list, with_masks: bool = True):
        self.samples = samples
        self.with_masks = with_masks

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> list[torch.Tensor]:
        sample = self.samples[index]
        decoded = [torch.from_numpy(cv2.imread(str(sample.image), cv2.IMREAD_COLOR))]
        if self.with_masks and sample.mask is not None:
            decoded.append(torch.from_numpy(cv2.imread(str(sample.mask), cv2.IMREAD_UNCHANGED)))
        return decoded


def benchmark_loader(arguments: argparse.Namespace) -> dict:
    """Return images per second of each pipeline, the fastest and the median pass, pipelines taking turns.

    A pass reads the images `repeats` times, so that filling and draining the workers' queues, which a
    real epoch of thousands of images hides, weighs little.
    """
    with tempfile.TemporaryDirectory() as temporary:
        samples = read_release_folder(write_release_folder(Path(temporary), arguments.images))
        order = list(range(len(samples))) * arguments.repeats
        loaders = {}
        # The baselines hand over single images; brgen's loader whole batches, as in training.
        for name, dataset in (("bare", BareDecoding(samples)), ("images_only", BareDecoding(samples, with_masks=False))):
            loaders[name] = DataLoader(dataset, batch_size=None, sampler=order, num_workers=arguments.workers, persistent_workers=arguments.workers > 0)
        for name, dataset in (("evaluation", ForgeryDataset(samples, 512)), ("training", ForgeryDataset(samples, 512, augment=True, seed=0))):
            loaders[name] = make_loader(dataset, arguments.loader_batch_size, arguments.workers, sampler=order, persistent_workers=True)

        # Persistent workers and one untimed pass keep worker start-up out of the figures.
        seconds = {name: [] for name in loaders}
        for timed in [False] + [True] * arguments.passes:
            for name, loader in loaders.items():
                started = time.perf_counter()
                for _ in loader:
                    pass
                if timed:
                    seconds[name].append(time.perf_counter() - started)
        return {
            name: {"best": len(order) / min(times), "median": len(order) / statistics.median(times)}
            for name, times in seconds.items()
        }


def main() -> None:
    arguments = parse_arguments()
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, device {arguments.device}, torch {torch.__version__}")

    step = benchmark_training_step(arguments)
    print(f"\ntraining step, batch {arguments.batch_size} at {arguments.image_size}x{arguments.image_size} (median of {arguments.steps}):")
    print(f"  NFA-ViT              {step['nfa_vit_s']:.3f} s  (of which noise extractor and noise branch, forward only: {step['noise_path_s']:.3f} s)")
    print(f"  SegFormer MiT-b2     {step['segformer_b2_s']:.3f} s")
    print(f"  ratio                {step['ratio']:.2f}x  (goal <= 1.6x)")

    loader = benchmark_loader(arguments)
    print(f"\nloader, {arguments.images} PNG images from the sample photos (half forgeries) read {arguments.repeats} times per pass, "
          f"{arguments.workers} workers, batches of {arguments.loader_batch_size}, output 512x512:")
    print("  images/s (ratio to bare decoding)  fastest pass      median pass")
    for name, title in (("bare", "bare PNG decoding"), ("images_only", "  image PNGs only"), ("evaluation", "evaluation loader"), ("training", "training loader")):
        rates = loader[name]
        print(f"  {title:<33} {rates['best']:6.1f} ({rates['best'] / loader['bare']['best']:.2f})  "
              f"{rates['median']:6.1f} ({rates['median'] / loader['bare']['median']:.2f})")
    print("  goal: ratio >= 0.8")


if __name__ == "__main__":
    main()
