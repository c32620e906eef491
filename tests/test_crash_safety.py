"""Crash safety: stages killed with SIGKILL at random points resume to the same bytes; failed writes leave nothing."""

import errno
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import stage_process
from brgen_build.engine import files_intact
from brgen_build.errors import BrgenError
from brgen_build.files import TEMPORARY_PREFIX, atomic_write_bytes, encode_png, remove_stale_temporaries, temporary_prefix
from brgen_build.layout import DatasetRoot
from brgen_build.locks import holder_of
from brgen_build.manifest import ManifestWriter, read_manifest_file, read_records
from conftest import sample_recipe_data, write_recipe
from small_sample import write_small_sample
from test_lama import TinyLama
from test_pipeline import run_cli

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

# Stage name -> the command that runs it, in build order.
STAGE_COMMANDS = {
    "reals": ["build", "--stage", "reals"],
    "masks": ["build", "--stage", "masks"],
    "inpaint/opencv-telea": ["inpaint", "--method", "opencv-telea"],
    "inpaint/lama": ["inpaint", "--method", "lama"],
}
STAGES = list(STAGE_COMMANDS)
TRIALS = 20
SLOW_FSYNC_SECONDS = 0.01
# Record fields that differ between two runs of the same item by design.
VOLATILE_FIELDS = ("finished_at", "seconds", "shard", "batch_size")


def command(stage: str, root: Path) -> list[str]:
    return ["-q", *STAGE_COMMANDS[stage], "--root", str(root), "--no-progress"]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A folder in memory (/dev/shm) where the machine has one, else on disk.

    Kill tests need no durability across power loss, and fsync on tmpfs costs nothing, so 160 stage runs
    take seconds there instead of a minute of disk flushes.
    """
    memory = Path("/dev/shm")
    if not (memory.is_dir() and os.access(memory, os.W_OK)):
        yield tmp_path_factory.mktemp("scratch")
        return
    folder = Path(tempfile.mkdtemp(prefix="brgen-test-", dir=memory))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def reference(scratch):
    """One uninterrupted build: a copy of the root before the first stage and after each stage, and stage run times."""
    base = scratch / "reference"
    base.mkdir()
    torch.manual_seed(0)
    weights = base / "big-lama.pt"
    torch.jit.script(TinyLama()).save(str(weights))
    data = write_small_sample(base)
    data["methods"] = {"opencv-telea": {"radius": 3}, "lama": {"weights": str(weights), "device": "cpu"}}
    root = base / "root"
    DatasetRoot(root).load_recipe(write_recipe(base, data))

    copies = {"start": base / "start"}
    shutil.copytree(root, copies["start"])
    stage_process.start_server()
    seconds, events = {}, {}
    for stage in STAGES:
        code, seconds[stage], _ = stage_process.run(command(stage, root), slow_fsync_seconds=SLOW_FSYNC_SECONDS, events_path=base / "events")
        assert code == 0, f"reference build failed at stage {stage}"
        events[stage] = stage_process.count_events(base / "events")
        copies[stage] = base / stage.replace("/", "-")
        shutil.copytree(root, copies[stage])
    return copies, seconds, events


def data_files(root: Path) -> dict[str, str]:
    """sha256 of every image of the root (manifests and temporary files excluded)."""
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in root.rglob("*.png")
        if "manifests" not in path.relative_to(root).parts and not path.name.startswith(TEMPORARY_PREFIX)
    }


def stable_records(root: Path, stage: str) -> dict[str, dict]:
    records = read_records(root / "manifests" / stage)
    return {item: {k: v for k, v in record.items() if k not in VOLATILE_FIELDS} for item, record in records.items()}


def unreadable_manifest_lines(root: Path) -> list[str]:
    bad = []
    for path in (root / "manifests").rglob("*.jsonl"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            try:
                json.loads(line)
            except json.JSONDecodeError:
                bad.append(f"{path.name}:{number}")
    return bad


@pytest.mark.parametrize("stage", STAGES)
def test_killed_stage_resumes_identically(stage, reference, scratch):
    """Even trials kill at a random time of the run, odd trials inside the window of a chosen image or manifest fsync."""
    copies, seconds, events = reference
    before = copies[(["start"] + STAGES)[STAGES.index(stage)]]
    expected_files = data_files(copies[stage])
    expected_records = stable_records(copies[stage], stage)
    rng = random.Random(STAGES.index(stage))
    interrupted = 0
    partial = 0

    for trial in range(TRIALS):
        root = scratch / f"trial-{trial}"
        shutil.copytree(before, root)
        slot, slots = trial // 2, TRIALS // 2
        if trial % 2 == 0:
            kill = {"kill_after": seconds[stage] * (slot + rng.random()) / slots}
        else:
            kill = {"kill_at_event": 1 + slot * events[stage] // slots, "rng": rng}
        where = f"trial {trial}, kill {kill}"
        code, _, killed = stage_process.run(
            command(stage, root), slow_fsync_seconds=SLOW_FSYNC_SECONDS, events_path=scratch / "events", **kill
        )
        assert code in (0, -signal.SIGKILL), where
        records = read_records(root / "manifests" / stage)
        assert all(files_intact(DatasetRoot(root), record) for record in records.values()), f"{where}: a recorded file is damaged"
        interrupted += killed
        partial += killed and 0 < len(records) < len(expected_records)

        code, _, _ = stage_process.run(command(stage, root))
        assert code == 0, f"{where}: the restart failed"
        assert data_files(root) == expected_files, where
        assert stable_records(root, stage) == expected_records, where
        assert not list(root.rglob(f"{TEMPORARY_PREFIX}*")), f"{where}: temporary files left"
        assert unreadable_manifest_lines(root) == [], where
        shutil.rmtree(root)

    assert interrupted > TRIALS // 2
    assert partial > 0


def test_second_process_on_same_shard_exits(reference, scratch):
    copies, _, _ = reference
    root = scratch / "two-processes"
    shutil.copytree(copies["start"], root)
    first = stage_process.start(command("reals", root), slow_fsync_seconds=0.25)
    while first.is_alive() and holder_of(root / "manifests" / "reals" / "shard-0-of-1.lock") is None:
        time.sleep(0.005)

    code, _, _ = stage_process.run(command("reals", root))
    first.join()
    assert code == 2
    assert first.exitcode == 0
    assert data_files(root) == data_files(copies["reals"])
    assert [path.name for path in (root / "manifests" / "reals").glob("*.jsonl")] == ["shard-0-of-1.jsonl"]


def test_damaged_and_unrecorded_files_are_redone(tmp_path, sample_recipe):
    root = DatasetRoot(tmp_path / "root")
    assert run_cli("build", "--stage", "reals", "--root", str(root.path), "--recipe", str(sample_recipe), "--no-progress") == 0
    damaged = root.au("val", "COCO_000000142238")
    unrecorded = root.au("train", "COCO_000000439180")
    expected = {damaged: damaged.read_bytes(), unrecorded: unrecorded.read_bytes()}
    damaged.write_bytes(expected[damaged][:-1] + bytes([expected[damaged][-1] ^ 1]))
    manifest = root.manifest_dir("reals") / "shard-0-of-1.jsonl"
    lines = manifest.read_text().splitlines(keepends=True)
    manifest.write_text("".join(line for line in lines if "COCO_000000439180" not in line))

    assert run_cli("build", "--stage", "reals", "--root", str(root.path), "--no-progress") == 0
    assert damaged.read_bytes() == expected[damaged]
    assert unrecorded.read_bytes() == expected[unrecorded]
    assert set(read_records(root.manifest_dir("reals"))) == {"COCO_000000142238", "COCO_000000439180"}


def test_torn_manifest_line_is_truncated(tmp_path):
    path = tmp_path / "shard-0-of-1.jsonl"
    path.write_text('{"id": "a", "status": "ok"}\n{"id": "b", "sta')
    with ManifestWriter(path) as writer:
        writer.append({"id": "c", "status": "ok"})
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    assert [record["id"] for record in read_manifest_file(path)] == ["a", "c"]


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = tmp_path / f"{TEMPORARY_PREFIX}999999999@{temporary_prefix().split('@')[1]}abc123"
    live = tmp_path / f"{temporary_prefix()}def456"
    other_host = tmp_path / f"{TEMPORARY_PREFIX}999999999@another-host-ghi789"
    for path in (dead, live, other_host):
        path.write_bytes(b"partial")
    assert remove_stale_temporaries([tmp_path]) == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([live.name, other_host.name])


def failing_fsync(error_number: int):
    def fsync(descriptor: int) -> None:
        raise OSError(error_number, os.strerror(error_number))

    return fsync


@pytest.mark.parametrize(
    ("error_number", "advice"),
    [(errno.ENOSPC, "The disk or quota is full"), (errno.EROFS, "mounted read-only"), (errno.EACCES, "Make the folder writable")],
)
def test_failed_write_leaves_nothing(tmp_path, monkeypatch, error_number, advice):
    target = tmp_path / "out" / "image.png"
    monkeypatch.setattr("os.fsync", failing_fsync(error_number))
    with pytest.raises(BrgenError) as raised:
        atomic_write_bytes(target, b"x" * 1000)
    assert str(target) in str(raised.value)
    assert advice in str(raised.value)
    assert list(target.parent.iterdir()) == []


def test_full_disk_during_stage_stops_it_cleanly(tmp_path, sample_recipe, monkeypatch, capsys):
    """Simulated ENOSPC on the second real photo: exit 2, the first photo recorded, nothing else on disk."""
    root = DatasetRoot(tmp_path / "root")
    real_fsync = os.fsync
    writes = {"count": 0}

    def fsync(descriptor: int) -> None:
        if os.readlink(f"/proc/self/fd/{descriptor}").endswith(".jsonl"):
            return real_fsync(descriptor)
        if "/Au/" in os.readlink(f"/proc/self/fd/{descriptor}"):
            writes["count"] += 1
            if writes["count"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(descriptor)

    root.load_recipe(sample_recipe)
    monkeypatch.setattr("os.fsync", fsync)
    assert run_cli("build", "--stage", "reals", "--root", str(root.path), "--no-progress") == 2
    error = capsys.readouterr().err
    assert "reals stopped: cannot write" in error
    assert "No space left on device" in error
    assert [path.name for path in root.path.rglob("*.png")] == ["COCO_000000142238.png"]
    assert list(read_records(root.manifest_dir("reals"))) == ["COCO_000000142238"]
    assert not list(root.path.rglob(f"{TEMPORARY_PREFIX}*"))


DISK_SCRIPT = r"""
set -u
mount -t tmpfs -o size="$SIZE" tmpfs "$DISK"
"$PYTHON" -m brgen_build -q build --stage reals --root "$DISK/root" --recipe "$RECIPE" --no-progress 2> "$OUT/full.err"
echo $? > "$OUT/full.rc"
cp -a "$DISK/root" "$OUT/full-root"
mount -o remount,size=64m "$DISK"
"$PYTHON" -m brgen_build -q build --stage reals --root "$DISK/root" --no-progress > "$OUT/resumed.out"
echo $? > "$OUT/resumed.rc"

mkdir -p "$DISK/readonly/val"
mount --bind "$DISK/readonly/val" "$DISK/readonly/val"
mount -o remount,bind,ro "$DISK/readonly/val"
"$PYTHON" -m brgen_build -q build --stage reals --root "$DISK/readonly" --recipe "$RECIPE" --no-progress 2> "$OUT/readonly.err"
echo $? > "$OUT/readonly.rc"
cp -a "$DISK/readonly" "$OUT/readonly-root"
"""


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory):
    """Run reals on a tmpfs too small for the second photo, then with room, then into a read-only `val` folder.

    The tmpfs is mounted in private user and mount namespaces (`unshare -Urm`), so it is invisible outside the
    test's processes, root or not. Skipped where the kernel or a sandbox forbids those namespaces.
    """
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-Urm", "true"], capture_output=True).returncode != 0:
        pytest.skip("user and mount namespaces (unshare -Urm) are not available to mount a small tmpfs")
    folder = tmp_path_factory.mktemp("disk")
    recipe = write_recipe(folder, {**sample_recipe_data(), "methods": {"opencv-telea": {}}})
    first_photo = Path(sample_recipe_data()["sources"][0]["images"]) / "000000142238.jpg"
    with Image.open(first_photo) as photo:
        first_png = len(encode_png(np.asarray(photo.convert("RGB"))))
    (folder / "disk").mkdir()
    (folder / "out").mkdir()
    environment = {
        **os.environ,
        "PYTHON": sys.executable,
        "RECIPE": str(recipe),
        "DISK": str(folder / "disk"),
        "OUT": str(folder / "out"),
        # Room for the first photo (written first: its id sorts first) and the small files, not for the second.
        "SIZE": f"{(first_png + 100 * 1024) // 1024}k",
    }
    subprocess.run(["unshare", "-Urm", "bash", "-c", DISK_SCRIPT], env=environment, check=True, timeout=300)
    return folder / "out"


def test_full_disk_stops_stage_without_partial_files(small_disk):
    error = (small_disk / "full.err").read_text()
    root = small_disk / "full-root"
    assert (small_disk / "full.rc").read_text().strip() == "2"
    assert "error: reals stopped: cannot write" in error
    assert "train/Au/COCO_000000439180.png: No space left on device. The disk or quota is full" in error
    assert sorted(path.relative_to(root).as_posix() for path in root.rglob("*.png")) == ["val/Au/COCO_000000142238.png"]
    assert list(read_records(root / "manifests" / "reals")) == ["COCO_000000142238"]
    assert not list(root.rglob(f"{TEMPORARY_PREFIX}*"))


def test_full_disk_run_resumes_after_space_is_freed(small_disk):
    assert (small_disk / "resumed.rc").read_text().strip() == "0"
    assert "reals: 2 planned in this shard, 1 already done, 1 ok" in (small_disk / "resumed.out").read_text()


def test_read_only_output_folder_stops_stage(small_disk):
    error = (small_disk / "readonly.err").read_text()
    root = small_disk / "readonly-root"
    assert (small_disk / "readonly.rc").read_text().strip() == "2"
    assert "val/Au/COCO_000000142238.png: Read-only file system. The file system is mounted read-only" in error
    assert not list(root.rglob("*.png"))
    assert read_records(root / "manifests" / "reals") == {}
