"""`torchrun --nproc_per_node 2` on CPU: two shards, each item built once, the same bytes as one process."""

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from brgen_build.manifest import read_manifest_file, read_records
from brgen_build.seeding import shard_index
from conftest import write_recipe
from small_sample import write_small_sample
from test_pipeline import run_cli

STAGES = ("reals", "masks", "inpaint/opencv-telea")
VOLATILE_FIELDS = ("finished_at", "seconds", "shard")


def torchrun_command() -> list[str]:
    script = Path(sys.executable).parent / "torchrun"
    return [str(script)] if script.exists() else [sys.executable, "-m", "torch.distributed.run"]


def images(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in root.rglob("*.png")
    }


def stable_records(root: Path, stage: str) -> dict[str, dict]:
    records = read_records(root / "manifests" / stage)
    return {item: {k: v for k, v in record.items() if k not in VOLATILE_FIELDS} for item, record in records.items()}


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory):
    """The same recipe built by one process and by `torchrun --nproc_per_node 2 ... build --stage all`."""
    folder = tmp_path_factory.mktemp("torchrun")
    data = write_small_sample(folder)
    data["methods"] = {"opencv-telea": {"radius": 3}}
    recipe = write_recipe(folder, data)
    single = folder / "single"
    assert run_cli("build", "--stage", "all", "--root", str(single), "--recipe", str(recipe), "--no-progress") == 0

    sharded = folder / "sharded"
    result = subprocess.run(
        [*torchrun_command(), "--standalone", "--nproc_per_node", "2", "-m", "brgen_build",
         "build", "--stage", "all", "--root", str(sharded), "--recipe", str(recipe), "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return single, sharded, result.stdout


@pytest.mark.parametrize("stage", STAGES)
def test_shards_cover_each_item_once(two_builds, stage):
    single, sharded, _ = two_builds
    ids = {}
    for index in range(2):
        ids[index] = [record["id"] for record in read_manifest_file(sharded / "manifests" / stage / f"shard-{index}-of-2.jsonl")]
    assert set(ids[0]).isdisjoint(ids[1])
    assert sorted(ids[0] + ids[1]) == sorted(read_records(single / "manifests" / stage))
    assert all(shard_index(item, 2) == index for index in range(2) for item in ids[index])


@pytest.mark.parametrize("stage", STAGES)
def test_sharded_records_equal_single_process(two_builds, stage):
    single, sharded, _ = two_builds
    assert stable_records(sharded, stage) == stable_records(single, stage)


def test_sharded_images_equal_single_process(two_builds):
    single, sharded, _ = two_builds
    assert images(sharded) == images(single)


def test_shard_zero_verifies_after_both_finished(two_builds):
    _, _, output = two_builds
    assert "verify: left to shard 0/2" in output
    assert "OK: every expected file is present" in output
