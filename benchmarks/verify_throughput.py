"""Benchmark verify's hashing and decoding throughput as ratios measured in one run.

Builds a synthetic dataset root (real photos cut from the bundled sample with random flips and colour
shifts, rectangle masks, forgeries blurred inside the mask, all written as brgen writes PNGs), then
times over the same files:
- `cat FILES > /dev/null` against verify's read-and-hash step in its process pool (goal: at least 0.8),
  with the page cache warm, and cold (each file's cached pages dropped with posix_fadvise first);
- decoding every file with Pillow in one process against verify's read-and-decode step in its pool
  (goal: at least 1.6x on 2 cores), and against a whole `verify` run, which also hashes and compares.
Each figure is the best of `--repeats` runs, because other processes share the machine's cores. On a
busy machine the wall-time speed-up of the pool says little, so the script also sums the CPU seconds
the workers spent decoding: one process's CPU seconds times the number of workers, divided by that sum,
estimates the speed-up on idle cores.

    python benchmarks/verify_throughput.py --photos 300
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import yaml
from PIL import Image

from brgen_build.files import write_png
from brgen_build.layout import DatasetRoot, forgery_id, mask_id, real_id
from brgen_build.manifest import OK, ManifestWriter
from brgen_build.photo_checks import read_and_hash
from brgen_build.verify import verify
from brgen_build.workers import usable_cpus, worker_pool
from manifests import data_path

WIDTH, HEIGHT = 512, 320
KINDS = ("Stuff", "Background")
METHOD, TOKEN = "opencv-telea", "OpenCVTelea"


def file_entry(root: DatasetRoot, path: Path, array: np.ndarray) -> dict:
    entry = write_png(path, array)
    return {"path": root.relative(path), **entry}


def write_recipe(folder: Path, photos: int) -> Path:
    recipe = yaml.safe_load(data_path("sample", "recipe.yaml").read_text())
    source = recipe["sources"][0]
    for key in ("images", "annotations", "categories"):
        source[key] = str((data_path("sample") / source[key]).resolve())
    recipe["splits"] = {"train": photos, "test": 0, "val": 0}
    recipe["methods"] = {METHOD: {"radius": 3}}
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def random_photo(sources: list[np.ndarray], index: int, rng: np.random.Generator) -> np.ndarray:
    source = sources[index % len(sources)]
    top = int(rng.integers(0, source.shape[0] - HEIGHT))
    left = int(rng.integers(0, source.shape[1] - WIDTH))
    photo = source[top : top + HEIGHT, left : left + WIDTH].astype(np.int16) + rng.integers(-20, 21, size=3)
    if index % 2:
        photo = photo[:, ::-1]
    return np.ascontiguousarray(np.clip(photo, 0, 255).astype(np.uint8))


def random_mask(kind: str, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    top, left = int(rng.integers(0, HEIGHT // 2)), int(rng.integers(0, WIDTH // 2))
    mask[top : top + HEIGHT // 2, left : left + WIDTH // 2] = 255
    return 255 - mask if kind == "Background" else mask


def make_dataset(folder: Path, photos: int, seed: int = 0) -> tuple[DatasetRoot, list[Path]]:
    """Write a root of `photos` real photos with 2 masks and 2 forgeries each; return it and its PNG files."""
    rng = np.random.default_rng(seed)
    sources = [np.asarray(Image.open(path).convert("RGB")) for path in sorted(data_path("sample", "images").glob("*.jpg"))]
    root = DatasetRoot(folder / "root")
    root.load_recipe(write_recipe(folder, photos))
    manifest = "shard-0-of-1.jsonl"
    files = []
    with ManifestWriter(root.manifest_dir("reals") / manifest) as reals, \
            ManifestWriter(root.manifest_dir("masks") / manifest) as masks, \
            ManifestWriter(root.manifest_dir(f"inpaint/{METHOD}") / manifest) as forgeries:
        for index in range(photos):
            photo = random_photo(sources, index, rng)
            real = real_id("COCO", f"{index:012d}")
            au = root.au("train", real)
            reals.append({"id": real, "split": "train", "status": OK, "source": "COCO", "width": WIDTH, "height": HEIGHT,
                          "files": {"au": file_entry(root, au, photo)}})
            files.append(au)
            blurred = cv2.blur(photo, (15, 15))
            for kind in KINDS:
                mask = random_mask(kind, rng)
                mask_path = root.mask("train", kind, real)
                masks.append({"id": mask_id(kind, real), "split": "train", "real": real, "kind": kind, "source": "COCO",
                              "status": OK, "area_ratio": float(np.mean(mask == 255)),
                              "files": {"mask": file_entry(root, mask_path, mask)}})
                name = forgery_id(TOKEN, kind, real)
                tp, gt = root.tp("train", name), root.gt("train", name)
                forgery = np.where(mask[:, :, None] == 255, blurred, photo)
                forgeries.append({"id": name, "split": "train", "status": OK, "method": METHOD, "token": TOKEN,
                                  "real": real, "kind": kind, "seed": index, "full_regeneration": False,
                                  "changed_outside_before_paste": 0.0,
                                  "files": {"tp": file_entry(root, tp, forgery), "gt": file_entry(root, gt, mask)}})
                files += [mask_path, tp, gt]
    return root, files


def evict(files: list[Path]) -> None:
    """Drop the files' pages from the page cache (clean pages only; the files were fsynced when written)."""
    for path in files:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)


def hash_file(path: str) -> str:
    return read_and_hash(Path(path))[1]


def decode_file(path: str) -> float:
    """Read a file and decode it fully from memory, as verify does; return the CPU seconds it took."""
    started = time.process_time()
    data = Path(path).read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        image.load()
    return time.process_time() - started


def pillow_decode(paths: list[str]) -> float:
    """Decode every file with Pillow in this process; return the CPU seconds it took."""
    started = time.process_time()
    for path in paths:
        with Image.open(path) as image:
            image.load()
    return time.process_time() - started


def best_time(run: Callable[[], object], repeats: int, before: Callable[[], object] = lambda: None) -> float:
    times = []
    for _ in range(repeats):
        before()
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=300, help="real photos; each adds 7 PNGs (default: 300)")
    parser.add_argument("--workers", type=int, default=usable_cpus(), help="pool processes (default: usable CPUs)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure; the best is kept (default: 3)")
    parser.add_argument("--workdir", type=Path, default=None, help="folder for the synthetic root (default: a temporary one)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.workdir) as folder:
        started = time.perf_counter()
        root, files = make_dataset(Path(folder), args.photos)
        paths = [str(path) for path in files]
        total_bytes = sum(path.stat().st_size for path in files)
        print(f"dataset: {len(paths)} PNGs, {total_bytes / 1e6:.0f} MB, built in {time.perf_counter() - started:.0f} s")
        recipe = root.load_recipe(None)
        chunk = max(1, len(paths) // (args.workers * 16))

        def cat() -> None:
            subprocess.run(["cat", *paths], stdout=subprocess.DEVNULL, check=True)

        with worker_pool(args.workers) as pool:
            pool.map(hash_file, paths[: args.workers])  # start the workers before timing

            def pooled_hash() -> None:
                list(pool.imap_unordered(hash_file, paths, chunksize=chunk))

            def pooled_decode() -> None:
                cpu_seconds.append(sum(pool.imap_unordered(decode_file, paths, chunksize=chunk)))

            cat()
            warm_cat = best_time(cat, args.repeats)
            warm_hash = best_time(pooled_hash, args.repeats)
            cold_cat = best_time(cat, args.repeats, lambda: evict(files))
            cold_hash = best_time(pooled_hash, args.repeats, lambda: evict(files))
            cat()
            cpu_seconds: list[float] = []
            single_cpu = min(pillow_decode(paths) for _ in range(args.repeats))
            single_decode = best_time(lambda: pillow_decode(paths), args.repeats)
            pool_decode = best_time(pooled_decode, args.repeats)
        whole_verify = best_time(lambda: verify(root, recipe, workers=args.workers), args.repeats)
        report = verify(root, recipe, workers=args.workers)
        assert report.ok, report.summary()

    def rate(seconds: float) -> str:
        return f"{total_bytes / seconds / 1e6:.0f} MB/s"

    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {args.workers} workers, Python {platform.python_version()}, load average {load}")
    print("| measure | time (s) | throughput | ratio |")
    print("| --- | --- | --- | --- |")
    print(f"| cat, warm cache | {warm_cat:.3f} | {rate(warm_cat)} | |")
    print(f"| verify hashing, warm cache | {warm_hash:.3f} | {rate(warm_hash)} | {warm_cat / warm_hash:.2f} of cat |")
    print(f"| cat, cold cache | {cold_cat:.3f} | {rate(cold_cat)} | |")
    print(f"| verify hashing, cold cache | {cold_hash:.3f} | {rate(cold_hash)} | {cold_cat / cold_hash:.2f} of cat |")
    print(f"| Pillow decoding, one process | {single_decode:.3f} | {len(paths) / single_decode:.0f} files/s | |")
    print(f"| verify decoding, pool | {pool_decode:.3f} | {len(paths) / pool_decode:.0f} files/s | {single_decode / pool_decode:.2f}x |")
    print(f"| whole verify (hash, decode, compare) | {whole_verify:.3f} | {len(paths) / whole_verify:.0f} files/s | {single_decode / whole_verify:.2f}x |")
    # Wall-time ratios need idle cores. CPU seconds do not, so they give an estimate for an idle machine.
    pool_cpu = min(cpu_seconds)
    print(f"decoding CPU seconds: one process {single_cpu:.2f}, pool workers together {pool_cpu:.2f}; "
          f"estimated speed-up on {args.workers} idle cores: {args.workers * single_cpu / pool_cpu:.2f}x")


if __name__ == "__main__":
    main()
