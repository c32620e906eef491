"""Benchmark: extracting listed photos from a nested tar and from a zip, against `cat` and `unzip -p`.

The script builds, in a temporary folder, an ImageNet-style tar of per-synset tars (about 2.1 GB by
default) and a COCO-style zip of the same photos, picks 1,000 members with a fixed seed, and measures in
one run:

- `cat ARCHIVE > /dev/null` and brgen's extraction of the 1,000 members (`TarContainer.read_members`),
  as throughput in archive bytes per second. The ratio brgen / cat is the figure of merit (goal >= 0.8).
  brgen's first run includes indexing the tar headers. Later runs read the cached index.
- `unzip -p ARCHIVE MEMBERS... > /dev/null` and brgen's `ZipContainer.read_members` of the same members.
- The whole reals stage (decode, PNG encode, atomic writes, manifest) on 200 of the members, for reference.

Each measurement runs in a fresh process, which reports its own peak resident memory. "Cold" means the
archive's pages were dropped from the page cache first (posix_fadvise DONTNEED), as for an archive larger
than memory. "Warm" means the archive was just read.

Photos are random-noise JPEGs of about 100 KB (ImageNet's mean file size is 108 KB), encoded once and
stored under many names, so building the archives takes seconds. Everything is deleted at the end.

    python benchmarks/bench_reals.py                 # about 2.1 GB, 1,000 members
    python benchmarks/bench_reals.py --size-gb 0.3   # a quick check
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

PHOTO_POOL = 24
SYNSETS = 128
STAGE_PHOTOS = 200


def noise_jpegs(count: int) -> list[bytes]:
    """Encode `count` random-noise photos of about 100 KB each."""
    rng = np.random.default_rng(0)
    photos = []
    for index in range(count):
        pixels = rng.integers(0, 256, (290 + 4 * index, 380, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
        photos.append(buffer.getvalue())
    return photos


def member_names(size_bytes: int, mean_photo: float) -> list[tuple[str, str]]:
    """Return (synset, file name) pairs, ImageNet-style, for about `size_bytes` of photos."""
    per_synset = max(1, round(size_bytes / mean_photo / SYNSETS))
    return [(f"n{s:08d}", f"n{s:08d}_{k}.JPEG") for s in range(SYNSETS) for k in range(per_synset)]


def build_nested_tar(path: Path, names: list[tuple[str, str]], photos: list[bytes]) -> None:
    with open(path, "wb") as output, tarfile.open(fileobj=output, mode="w|") as outer:
        synsets: dict[str, list[str]] = {}
        for synset, name in names:
            synsets.setdefault(synset, []).append(name)
        index = 0
        for synset, files in synsets.items():
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as inner:
                for name in files:
                    data = photos[index % len(photos)]
                    index += 1
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    inner.addfile(info, io.BytesIO(data))
            info = tarfile.TarInfo(f"{synset}.tar")
            info.size = buffer.tell()
            buffer.seek(0)
            outer.addfile(info, buffer)


def build_zip(path: Path, names: list[tuple[str, str]], photos: list[bytes]) -> None:
    # Stored, not deflated: compressing 2 GB of noise would take minutes and gain nothing.
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for index, (synset, name) in enumerate(names):
            archive.writestr(f"train/{synset}/{name}", photos[index % len(photos)])


def timed_build(builder, path: Path, names, photos) -> None:
    started = time.perf_counter()
    builder(path, names, photos)
    print(f"built {path.name}: {path.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - started:.0f} s", file=sys.stderr)


def drop_from_page_cache(path: Path) -> None:
    """Evict the file's pages from the page cache; fsync first, because dirty pages are not evicted."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)


def timed_shell(command: list[str]) -> dict:
    """Run a command with stdout to /dev/null and return its wall time."""
    started = time.perf_counter()
    with open(os.devnull, "wb") as devnull:
        subprocess.run(command, stdout=devnull, check=True)
    return {"seconds": time.perf_counter() - started}


def peak_rss_mb() -> float:
    """Return this process's peak resident memory in MB.

    /proc's VmHWM counts only since exec. ru_maxrss, the fallback off Linux, can also include the
    parent's memory copied at fork.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(*arguments: str) -> dict:
    output = subprocess.run([sys.executable, __file__, "--child", *arguments], check=True, capture_output=True, text=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


# Child processes: one measurement each, reported as one JSON line.


def child_extract(kind: str, archive: str, wanted_file: str, cache: str) -> dict:
    from brgen_build.sources import ZipContainer
    from brgen_build.tar_source import TarContainer

    wanted = set(Path(wanted_file).read_text().split("\n"))
    started = time.perf_counter()
    container = TarContainer(Path(archive), Path(cache)) if kind == "tar" else ZipContainer(Path(archive))
    selected = [member for member in container.members() if member.path in wanted]
    indexed = time.perf_counter()
    count, total = 0, 0
    for _, data in container.read_members(selected):
        if not isinstance(data, bytes):
            raise RuntimeError(f"read failed: {data}")
        count += 1
        total += len(data)
    finished = time.perf_counter()
    return {
        "members": count,
        "bytes": total,
        "index_seconds": indexed - started,
        "seconds": finished - started,
        "peak_rss_mb": peak_rss_mb(),
    }


def child_stage(archive: str, list_file: str, root: str) -> dict:
    import yaml

    from brgen_build.engine import run_stage
    from brgen_build.layout import DatasetRoot
    from brgen_build.stages.reals import RealsStage

    recipe = Path(root).parent / "bench-recipe.yaml"
    source = {"token": "ImageNet", "kind": "imagenet", "images": archive, "image_list": list_file}
    recipe.write_text(yaml.safe_dump({"name": "bench", "seed": 0, "sources": [source], "splits": {"train": 1}}))
    started = time.perf_counter()
    dataset = DatasetRoot(root)
    summary = run_stage(RealsStage(dataset, dataset.load_recipe(recipe)), progress=False)
    return {
        "members": summary.counts["ok"],
        "seconds": time.perf_counter() - started,
        "peak_rss_mb": peak_rss_mb(),
    }


# The benchmark.


def median_runs(runs: dict[str, list[dict]]) -> dict[str, dict]:
    """Return, per measurement, the run with the median time, with every run's time added."""
    result = {}
    for name, measured in runs.items():
        ordered = sorted(measured, key=lambda run: run["seconds"])
        result[name] = {**ordered[len(ordered) // 2], "all_seconds": [round(run["seconds"], 3) for run in measured]}
    return result


def measure_tar(folder: Path, names, photos, wanted: list[str], repeats: int) -> dict:
    archive = folder / "ILSVRC-like_train.tar"
    timed_build(build_nested_tar, archive, names, photos)
    wanted_file = folder / "wanted-tar.txt"
    wanted_file.write_text("\n".join(f"{synset}.tar/{name}" for synset, name in wanted))
    list_file = folder / "ImageNet_image_list.txt"
    list_file.write_text("\n".join(name for _, name in wanted[:STAGE_PHOTOS]) + "\n")
    cache = folder / "cache"

    def extract() -> dict:
        return run_child("extract", "tar", str(archive), str(wanted_file), str(cache))

    runs: dict[str, list[dict]] = {name: [] for name in ("cat_cold", "first_run_cold", "cached_index_cold", "cat_warm", "cached_index_warm")}
    for _ in range(repeats):
        drop_from_page_cache(archive)
        runs["cat_cold"].append(timed_shell(["cat", str(archive)]))
        shutil.rmtree(cache, ignore_errors=True)
        drop_from_page_cache(archive)
        runs["first_run_cold"].append(extract())
        drop_from_page_cache(archive)
        runs["cached_index_cold"].append(extract())
        runs["cat_warm"].append(timed_shell(["cat", str(archive)]))
        runs["cached_index_warm"].append(extract())
    drop_from_page_cache(archive)
    runs["stage_cold"] = [run_child("stage", str(archive), str(list_file), str(folder / "root"))]
    size = archive.stat().st_size
    archive.unlink()
    return {"size_bytes": size, **median_runs(runs)}


def measure_zip(folder: Path, names, photos, wanted: list[str], repeats: int) -> dict:
    archive = folder / "coco-like_train.zip"
    timed_build(build_zip, archive, names, photos)
    members = [f"train/{synset}/{name}" for synset, name in wanted]
    wanted_file = folder / "wanted-zip.txt"
    wanted_file.write_text("\n".join(members))

    def extract() -> dict:
        return run_child("extract", "zip", str(archive), str(wanted_file), "-")

    runs: dict[str, list[dict]] = {name: [] for name in ("unzip_cold", "brgen_cold", "unzip_warm", "brgen_warm")}
    for _ in range(repeats):
        drop_from_page_cache(archive)
        runs["unzip_cold"].append(timed_shell(["unzip", "-p", str(archive), *members]))
        drop_from_page_cache(archive)
        runs["brgen_cold"].append(extract())
        runs["unzip_warm"].append(timed_shell(["unzip", "-p", str(archive), *members]))
        runs["brgen_warm"].append(extract())
    size = archive.stat().st_size
    archive.unlink()
    return {"size_bytes": size, **median_runs(runs)}


def report(tar: dict, zip_results: dict, arguments: argparse.Namespace) -> str:
    """Format the results as the Markdown of benchmarks/RESULTS.md."""

    def row(label: str, measured: dict, reference: dict) -> str:
        ratio = reference["seconds"] / measured["seconds"]
        memory = f"{measured['peak_rss_mb']:.0f} MB" if measured.get("peak_rss_mb") else "-"
        seconds = ", ".join(f"{value:.2f}" for value in measured["all_seconds"])
        return f"| {label} | {seconds} | {ratio:.2f} | {memory} |"

    first = tar["first_run_cold"]
    stage = tar["stage_cold"]
    return "\n".join(
        [
            f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}",
            f"Command: python benchmarks/bench_reals.py --size-gb {arguments.size_gb} --members {arguments.members} "
            f"--repeats {arguments.repeats}",
            f"Date: {time.strftime('%Y-%m-%d')}",
            "",
            f"Nested tar: {tar['size_bytes'] / 1e9:.2f} GB, {SYNSETS} inner tars, {arguments.members} members extracted. "
            f"Ratios compare medians; the first run's median spent {first['index_seconds']:.2f} s indexing.",
            "",
            "| measurement | seconds per run | throughput ratio to cat, same cache state | peak RSS |",
            "| --- | --- | --- | --- |",
            row("cat, cold", tar["cat_cold"], tar["cat_cold"]),
            row("brgen, cold, first run (index + extraction)", first, tar["cat_cold"]),
            row("brgen, cold, cached index", tar["cached_index_cold"], tar["cat_cold"]),
            row("cat, warm", tar["cat_warm"], tar["cat_warm"]),
            row("brgen, warm, cached index", tar["cached_index_warm"], tar["cat_warm"]),
            "",
            f"Whole reals stage on {stage['members']} of these photos (decode, PNG encode, atomic writes, manifest), "
            f"cold archive, cached index: {stage['seconds']:.1f} s, {stage['members'] / stage['seconds']:.1f} photos/s, "
            f"peak RSS {stage['peak_rss_mb']:.0f} MB.",
            "",
            f"Zip: {zip_results['size_bytes'] / 1e9:.2f} GB, the same photos, {arguments.members} members extracted.",
            "",
            "| measurement | seconds per run | throughput ratio to unzip -p, same cache state | peak RSS |",
            "| --- | --- | --- | --- |",
            row("unzip -p, cold", zip_results["unzip_cold"], zip_results["unzip_cold"]),
            row("brgen, cold", zip_results["brgen_cold"], zip_results["unzip_cold"]),
            row("unzip -p, warm", zip_results["unzip_warm"], zip_results["unzip_warm"]),
            row("brgen, warm", zip_results["brgen_warm"], zip_results["unzip_warm"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gb", type=float, default=2.1, help="Size of each archive in GB (default 2.1).")
    parser.add_argument("--members", type=int, default=1000, help="Members to extract (default 1000).")
    parser.add_argument("--repeats", type=int, default=3, help="Runs of each measurement; the median counts (default 3).")
    parser.add_argument("--temp-dir", default=None, help="Folder for the archives (default: the system temp folder).")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    arguments = parser.parse_args()

    if arguments.child:
        kind, *rest = arguments.child
        result = child_extract(*rest) if kind == "extract" else child_stage(*rest)
        print(json.dumps(result))
        return

    temp_root = Path(arguments.temp_dir or tempfile.gettempdir())
    needed = arguments.size_gb * 1e9 * 1.2
    free = shutil.disk_usage(temp_root).free
    if free < needed:
        sys.exit(f"{temp_root} has {free / 1e9:.1f} GB free but the benchmark needs about {needed / 1e9:.1f} GB; pass --temp-dir")

    photos = noise_jpegs(PHOTO_POOL)
    names = member_names(int(arguments.size_gb * 1e9), sum(map(len, photos)) / len(photos))
    wanted = sorted(random.Random(0).sample(names, arguments.members))
    with tempfile.TemporaryDirectory(prefix="brgen-bench-", dir=temp_root) as folder:
        tar = measure_tar(Path(folder), names, photos, wanted, arguments.repeats)
        zip_results = measure_zip(Path(folder), names, photos, wanted, arguments.repeats)
    print(json.dumps({"tar": tar, "zip": zip_results}, indent=1), file=sys.stderr)
    print(report(tar, zip_results, arguments))


if __name__ == "__main__":
    main()
