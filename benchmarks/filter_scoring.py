"""Quality filter: scoring throughput per scorer, one forgery per call against batches.

Scores the bundled sample photos (640x427 and 640x480, repeated) with each scorer and prints images per
second at batch size 1 and at `--batch-size`, and their ratio. The CLIP and DINO models have the
architecture of the named checkpoints with random weights. They cost the same compute as the trained ones,
and nothing is downloaded. BRISQUE uses the LIVE model of the installed `brisque` package.

    python benchmarks/filter_scoring.py --threads 1          # CPU, ViT-B sizes, about 3 minutes on a shared 2-core machine
    python benchmarks/filter_scoring.py --device cuda --size large --images 256
    python benchmarks/filter_scoring.py --size tiny          # a smoke run in seconds
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from inpainters.quality.base import crop_sample  # noqa: E402
from inpainters.quality.brisque import Brisque  # noqa: E402
from inpainters.quality.clip_score import ClipScore  # noqa: E402
from inpainters.quality.embedding_distance import EmbeddingDistance  # noqa: E402
from manifests import data_path  # noqa: E402
from tiny_scorer_models import pil_processor_class, save_tiny_clip, save_tiny_dino, write_clip_vocabulary  # noqa: E402

# Architectures of openai/clip-vit-base-patch32 and openai/clip-vit-large-patch14, and of facebook/dino-vitb16.
# DINO released no ViT-L, so `large` is a ViT-L/16 of the same layout.
CLIP_SIZES = {
    "base": {"text": (512, 8, 12, 2048), "vision": (768, 12, 12, 3072, 32), "projection": 512},
    "large": {"text": (768, 12, 12, 3072), "vision": (1024, 16, 24, 4096, 14), "projection": 768},
}
DINO_SIZES = {"base": (768, 12, 12, 3072), "large": (1024, 16, 24, 4096)}


def save_clip(folder: Path, size: str) -> Path:
    if size == "tiny":
        return save_tiny_clip(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_clip_vocabulary(folder)
    tokenizer = transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    text_hidden, text_heads, text_layers, text_mlp = CLIP_SIZES[size]["text"]
    hidden, heads, layers, mlp, patch = CLIP_SIZES[size]["vision"]
    config = transformers.CLIPConfig(
        text_config={"vocab_size": 49408, "hidden_size": text_hidden, "num_attention_heads": text_heads,
                     "num_hidden_layers": text_layers, "intermediate_size": text_mlp, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1},
        vision_config={"hidden_size": hidden, "num_attention_heads": heads, "num_hidden_layers": layers,
                       "intermediate_size": mlp, "patch_size": patch, "image_size": 224},
        projection_dim=CLIP_SIZES[size]["projection"],
    )
    transformers.CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    pil_processor_class("CLIPImageProcessor")(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(folder)
    return folder


def save_dino(folder: Path, size: str) -> Path:
    if size == "tiny":
        return save_tiny_dino(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hidden, heads, layers, mlp = DINO_SIZES[size]
    config = transformers.ViTConfig(hidden_size=hidden, num_attention_heads=heads, num_hidden_layers=layers,
                                    intermediate_size=mlp, patch_size=16, image_size=224)
    transformers.ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    pil_processor_class("ViTImageProcessor")(size={"height": 224, "width": 224}).save_pretrained(folder)
    return folder


def sample_forgeries(count: int) -> list:
    """Scoring samples from the bundled photos; the forgery is the photo with its lower half mirrored."""
    photos = []
    for path in sorted((data_path("sample") / "images").glob("*.jpg")):
        with Image.open(path) as image:
            photos.append(np.asarray(image.convert("RGB")))
    samples = []
    for index in range(count):
        real = photos[index % len(photos)]
        mask = np.zeros(real.shape[:2], bool)
        mask[real.shape[0] // 2 :] = True
        forgery = np.where(mask[:, :, None], real[::-1], real)
        samples.append((f"photo{index}", forgery, real, mask, "a photo of grass and sky"))
    return samples


def throughput(scorer, samples, batch_size: int, device: str) -> float:
    """Return images per second of `scorer` over `samples` in batches of `batch_size` (after one warm-up batch)."""
    cropped = [crop_sample(*sample, scorer.crop) for sample in samples]
    scorer.score(cropped[:batch_size])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    for start in range(0, len(cropped), batch_size):
        scorer.score(cropped[start : start + batch_size])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return len(cropped) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--size", choices=["tiny", "base", "large"], default="base", help="model sizes (default: base)")
    parser.add_argument("--images", type=int, default=32, help="forgeries scored per measurement (default: 32)")
    parser.add_argument("--batch-size", type=int, default=8, help="batch size compared with 1 (default: 8)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    arguments = parser.parse_args()
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)

    samples = sample_forgeries(arguments.images)
    with tempfile.TemporaryDirectory() as folder:
        clip = save_clip(Path(folder) / "clip", arguments.size)
        dino = save_dino(Path(folder) / "dino", arguments.size)
        scorers = [
            Brisque({}),
            ClipScore({"weights": str(clip)}, device=arguments.device),
            EmbeddingDistance({"weights": str(dino)}, device=arguments.device),
            EmbeddingDistance({"weights": str(clip)}, device=arguments.device),
        ]
        labels = ["brisque (640x427 photo)", f"clip-score (CLIP {arguments.size})", f"embedding-distance (DINO {arguments.size})",
                  f"embedding-distance (CLIP {arguments.size})"]
        print(f"device {arguments.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, {arguments.images} images")
        print(f"{'scorer':<40} {'img/s batch 1':>14} {'img/s batch ' + str(arguments.batch_size):>15} {'ratio':>6}")
        for label, scorer in zip(labels, scorers):
            scorer.check()
            scorer.load()
            single = throughput(scorer, samples, 1, arguments.device)
            batched = throughput(scorer, samples, arguments.batch_size, arguments.device)
            print(f"{label:<40} {single:>14.2f} {batched:>15.2f} {batched / single:>6.2f}")


if __name__ == "__main__":
    main()
