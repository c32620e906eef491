"""Cost of crash-safe writes and speed-up of two shards, on the reals stage.

Builds a source folder with COUNT copies of the two bundled photos (640x427 and 640x360 JPEG) and times the
reals stage (decode, PNG encode, durable write, manifest record) three ways in one run:

1. one process, as shipped (fsync of each file, its folder and its manifest line);
2. one process with os.fsync replaced by a no-op, to isolate what durability costs;
3. two shards as two processes under `torchrun --standalone --nproc_per_node 2`.

Ratios, not absolute times, are the result: they cancel most of the machine's speed. Usage:

    python benchmarks/sharding.py --count 40
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from brgen_build.cli import main
from manifests import data_path


def make_source(folder: Path, count: int) -> Path:
    images = folder / "images"
    images.mkdir()
    for number in range(count):
        for photo in sorted(data_path("sample", "images").glob("*.jpg")):
            shutil.copyfile(photo, images / f"{number:04d}_{photo.name}")
    return images


def write_recipe(folder: Path, images: Path) -> Path:
    recipe = {
        "name": "sharding-benchmark",
        "seed": 0,
        "sources": [{"token": "COCO", "kind": "coco", "images": str(images)}],
        "splits": {"train": 0.8, "test": 0.1, "val": 0.1},
        "methods": {"opencv-telea": {}},
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def time_in_process(root: Path, recipe: Path, durable: bool) -> float:
    fsync = os.fsync
    if not durable:
        os.fsync = lambda descriptor: None
    started = time.perf_counter()
    try:
        main(["-q", "build", "--stage", "reals", "--root", str(root), "--recipe", str(recipe), "--no-progress"])
    except SystemExit as exit:
        if exit.code:
            raise RuntimeError(f"reals failed with exit code {exit.code}") from None
    finally:
        os.fsync = fsync
    return time.perf_counter() - started


def time_torchrun(root: Path, recipe: Path) -> float:
    torchrun = Path(sys.executable).parent / "torchrun"
    command = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    command += ["--standalone", "--nproc_per_node", "2", "-m", "brgen_build", "-q", "build", "--stage", "reals",
                "--root", str(root), "--recipe", str(recipe), "--no-progress"]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def main_benchmark() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=40, help="copies of each bundled photo (default 40, so 80 photos)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="brgen-sharding-") as scratch:
        folder = Path(scratch)
        recipe = write_recipe(folder, make_source(folder, args.count))
        photos = 2 * args.count
        durable = time_in_process(folder / "durable", recipe, durable=True)
        plain = time_in_process(folder / "plain", recipe, durable=False)
        sharded = time_torchrun(folder / "sharded", recipe)

    print(f"reals stage, {photos} photos, {os.cpu_count()} CPU cores")
    print(f"one process, durable writes:      {durable:7.2f} s  ({photos / durable:6.1f} photos/s)")
    print(f"one process, fsync disabled:      {plain:7.2f} s  ({photos / plain:6.1f} photos/s)")
    print(f"two shards under torchrun:        {sharded:7.2f} s  ({photos / sharded:6.1f} photos/s, includes torchrun start)")
    print(f"durable / fsync disabled time:    {durable / plain:7.2f}")
    print(f"one process / two shards time:    {durable / sharded:7.2f}")


if __name__ == "__main__":
    main_benchmark()
