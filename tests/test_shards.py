"""Shards: the split, launcher variables, GPU choice, shard locks, waits between stages, failure budgets, `brgen status`."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from brgen_build.errors import BrgenError, RecipeError
from brgen_build.layout import DatasetRoot
from brgen_build.locks import FileLock, LockHeld
from brgen_build.manifest import ManifestWriter, read_records
from brgen_build.recipe import FailureBudget, parse_recipe
from brgen_build.seeding import Shard, detect_shard, shard_index
from brgen_build.shards import unfinished_items, wait_for_stage
from conftest import sample_recipe_data, write_recipe
from inpainters.base import MethodError, resolve_device
from small_sample import write_small_sample
from test_pipeline import run_cli

TOP = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("count", [1, 2, 3, 8])
def test_shards_are_disjoint_and_complete(count):
    names = [f"COCO_{number:012d}" for number in range(2000)]
    owners = [[index for index in range(count) if Shard(index, count).owns(name)] for name in names]
    assert all(len(owner) == 1 for owner in owners)
    sizes = [sum(owner == [index] for owner in owners) for index in range(count)]
    assert min(sizes) > 0.8 * len(names) / count


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, Shard(0, 1)),
        ({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "3"}, Shard(3, 8)),
        ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "8", "SLURM_ARRAY_TASK_MIN": "0"}, Shard(5, 8)),
        ({"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_STEP": "2"}, Shard(3, 4)),
        ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2", "RANK": "1", "WORLD_SIZE": "4"}, Shard(5, 8)),
    ],
)
def test_shard_from_launcher_variables(environ, expected):
    assert detect_shard(environ)[0] == expected


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"RANK": "one", "WORLD_SIZE": "2"}, "RANK='one' is not an integer"),
        ({"RANK": "4", "WORLD_SIZE": "4"}, "invalid shard 4/4 from RANK and WORLD_SIZE"),
        ({"SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_COUNT": "4"}, "Slurm array task id 9 does not map to a shard"),
    ],
)
def test_bad_launcher_variables_are_named(environ, message):
    with pytest.raises(BrgenError, match=message):
        detect_shard(environ)


def test_build_takes_shard_from_torchrun_variables(tmp_path, sample_recipe, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    root = DatasetRoot(tmp_path / "root")
    assert run_cli("build", "--stage", "reals", "--root", str(root.path), "--recipe", str(sample_recipe), "--no-progress") == 0
    manifests = sorted(path.name for path in root.manifest_dir("reals").glob("*.jsonl"))
    assert manifests == ["shard-1-of-2.jsonl"]
    assert all(shard_index(item, 2) == 1 for item in read_records(root.manifest_dir("reals")))


@pytest.mark.parametrize(
    ("device", "local_rank", "visible", "expected"),
    [
        ("auto", "2", 4, "cuda:2"),
        ("cuda", "3", 4, "cuda:3"),
        ("cuda:1", "3", 4, "cuda:1"),
        ("cpu", "3", 4, "cpu"),
        ("auto", "5", 1, "cuda:0"),
        ("auto", None, 4, "cuda"),
    ],
)
def test_local_rank_picks_the_gpu(monkeypatch, device, local_rank, visible, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    if local_rank is None:
        monkeypatch.delenv("LOCAL_RANK", raising=False)
    else:
        monkeypatch.setenv("LOCAL_RANK", local_rank)
    assert resolve_device(device) == expected


def test_local_rank_beyond_visible_gpus_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "3")
    with pytest.raises(MethodError, match="LOCAL_RANK=3 but this process sees 2 GPU"):
        resolve_device("auto")


def test_second_holder_is_rejected_with_holder_named(tmp_path):
    path = tmp_path / "shard-0-of-1.lock"
    with FileLock(path, "stage reals, shard 0/1"):
        with pytest.raises(LockHeld) as raised:
            FileLock(path, "stage reals, shard 0/1").acquire(attempts=2, delay=0.01)
    message = str(raised.value)
    assert "stage reals, shard 0/1 is already running" in message
    assert f"pid {os.getpid()}" in message
    assert f"host {os.uname().nodename}" in message


def test_same_shard_in_two_processes_fails_cleanly(tmp_path, sample_recipe, capsys):
    root = DatasetRoot(tmp_path / "root")
    root.load_recipe(sample_recipe)
    with FileLock(root.manifest_dir("reals") / "shard-0-of-1.lock", "test"):
        assert run_cli("build", "--stage", "reals", "--root", str(root.path), "--no-progress") == 2
    assert f"stage reals, shard 0/1 is already running: host {os.uname().nodename} pid {os.getpid()}" in capsys.readouterr().err
    assert not list(root.path.rglob("*.png"))


def test_lock_of_killed_process_is_taken_over(tmp_path):
    path = tmp_path / "shard-0-of-1.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from brgen_build.locks import FileLock; import time; FileLock({str(path)!r}, 'x').acquire(); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline() == "held\n"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert str(holder.pid) in path.read_text()
    with FileLock(path, "stage reals, shard 0/1"):
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_other_shard_count_running_is_rejected(tmp_path, sample_recipe, capsys):
    root = DatasetRoot(tmp_path / "root")
    root.load_recipe(sample_recipe)
    with FileLock(root.manifest_dir("reals") / "shard-3-of-4.lock", "stage reals, shard 3/4"):
        assert run_cli("build", "--stage", "reals", "--root", str(root.path), "--shard", "0/2", "--no-progress") == 2
    error = capsys.readouterr().err
    assert "stage reals is running with 4 shards" in error
    assert "--shard I/4" in error


def write_records(root: DatasetRoot, stage: str, records: list[dict]) -> None:
    with ManifestWriter(root.manifest_dir(stage) / "shard-0-of-2.jsonl") as writer:
        for record in records:
            writer.append(record)


def test_unfinished_items_of_a_stage(tmp_path):
    root = DatasetRoot(tmp_path)
    (tmp_path / "present.png").write_bytes(b"12345")
    write_records(root, "reals", [
        {"id": "done", "status": "ok", "files": {"au": {"path": "present.png", "bytes": 5, "sha256": "-"}}},
        {"id": "gone", "status": "ok", "files": {"au": {"path": "missing.png", "bytes": 5, "sha256": "-"}}},
        {"id": "bad", "status": "failed", "reason": "decoder error"},
        {"id": "empty", "status": "skipped", "reason": "no regions"},
    ])
    assert unfinished_items(root, "reals", ["done", "gone", "bad", "empty", "absent"]) == ["gone", "absent"]


def test_wait_timeout_names_the_missing_shard(tmp_path):
    root = DatasetRoot(tmp_path)
    with pytest.raises(BrgenError) as raised:
        wait_for_stage(root, "masks", ["Stuff_COCO_1"], Shard(0, 2), timeout=0)
    message = str(raised.value)
    assert "timed out after 0 s waiting for stage masks" in message
    assert f"owned by shard(s) {shard_index('Stuff_COCO_1', 2)}/2" in message


def test_wait_returns_when_the_other_shard_finishes(tmp_path):
    root = DatasetRoot(tmp_path)
    other = threading.Timer(0.3, write_records, (root, "masks", [{"id": "Stuff_COCO_1", "status": "skipped"}]))
    other.start()
    wait_for_stage(root, "masks", ["Stuff_COCO_1"], Shard(0, 2), timeout=30)
    other.join()
    assert "Stuff_COCO_1" in read_records(root.manifest_dir("masks"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, FailureBudget(count=0)), (3, FailureBudget(count=3)), (0.01, FailureBudget(fraction=0.01)), ("0.5%", FailureBudget(fraction=0.005))],
)
def test_failure_budget_values(value, expected):
    data = sample_recipe_data()
    data["failure_budget"] = value
    assert parse_recipe(data, "recipe.yaml", TOP).failure_budget == expected


@pytest.mark.parametrize("value", [-1, 1.5, "many", True, "150%"])
def test_invalid_failure_budget_names_the_key(value):
    data = sample_recipe_data()
    data["failure_budget"] = value
    with pytest.raises(RecipeError, match=r"recipe.yaml: `failure_budget` must be a count"):
        parse_recipe(data, "recipe.yaml", TOP)


@pytest.fixture
def failing_stuff(monkeypatch):
    """Make opencv-telea fail on every Stuff mask: 2 of the sample's 4 forgeries."""
    from inpainters.opencv_telea import OpenCVTelea

    original = OpenCVTelea.inpaint

    def inpaint(self, requests):
        if any("_Stuff_" in request.name for request in requests):
            raise RuntimeError("out of memory")
        return original(self, requests)

    monkeypatch.setattr(OpenCVTelea, "inpaint", inpaint)


@pytest.fixture(scope="module")
def masks_built(tmp_path_factory):
    """A root of the small sample with reals and masks built, and its recipe data."""
    folder = tmp_path_factory.mktemp("budget")
    data = write_small_sample(folder)
    data["methods"] = {"opencv-telea": {"radius": 3}}
    root = folder / "root"
    assert run_cli("build", "--stage", "reals", "--root", str(root), "--recipe", str(write_recipe(folder, data)), "--no-progress") == 0
    assert run_cli("build", "--stage", "masks", "--root", str(root), "--no-progress") == 0
    return root, data


@pytest.mark.parametrize(("budget", "exit_code", "message"), [(0, 1, "exceed"), (0.25, 1, "exceed"), (2, 0, "within"), ("50%", 0, "within")])
def test_failure_budget_sets_exit_code(tmp_path, masks_built, failing_stuff, capsys, budget, exit_code, message):
    built, data = masks_built
    root = tmp_path / "root"
    shutil.copytree(built, root)
    recipe = write_recipe(tmp_path, {**data, "failure_budget": budget})
    capsys.readouterr()
    assert run_cli("inpaint", "--method", "opencv-telea", "--root", str(root), "--recipe", str(recipe), "--no-progress") == exit_code
    captured = capsys.readouterr()
    assert "2 ok, 0 skipped, 2 failed" in captured.out
    assert f"2 failed item(s) {message} the recipe's failure_budget" in captured.err


def test_status_shows_each_shard(tmp_path, sample_recipe, capsys):
    root = DatasetRoot(tmp_path / "root")
    assert run_cli("build", "--stage", "reals", "--root", str(root.path), "--recipe", str(sample_recipe), "--shard", "0/2", "--no-progress") == 0
    state = {"stage": "reals", "shard": "1/2", "started_at": "2026-01-01T00:00:00.000+00:00", "finished_at": None, "pending": 1, "planned": 1, "host": "n1", "pid": 7}
    (root.manifest_dir("reals") / "shard-1-of-2.state.json").write_text(json.dumps(state))
    capsys.readouterr()
    with FileLock(root.manifest_dir("masks") / "shard-0-of-1.lock", "stage masks, shard 0/1"):
        assert run_cli("status", str(root.path)) == 0
    lines = capsys.readouterr().out.split("\n\n")[1].splitlines()
    rows = {tuple(line.split()[:3]) for line in lines[1:]}
    assert rows == {("reals", "0/2", "finished"), ("reals", "1/2", "interrupted"), ("masks", "0/1", "running")}
    assert f"pid {os.getpid()}" in next(line for line in lines if line.startswith("masks"))


def test_slurm_array_script_runs_its_shard(tmp_path, sample_recipe):
    root = tmp_path / "root"
    environment = {
        **os.environ,
        "PYTHON": sys.executable,
        "BRGEN_ROOT": str(root),
        "SLURM_ARRAY_TASK_ID": "1",
        "SLURM_ARRAY_TASK_COUNT": "2",
        "SLURM_ARRAY_TASK_MIN": "0",
    }
    result = subprocess.run(
        ["bash", str(TOP / "examples" / "slurm-array.sh"), "reals", "--recipe", str(sample_recipe)],
        env=environment, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "reals: 1 planned in this shard" in result.stdout
    assert sorted(path.name for path in (root / "manifests" / "reals").glob("*.jsonl")) == ["shard-1-of-2.jsonl"]


def test_status_timestamps_share_one_format(tmp_path, sample_recipe, capsys):
    root = DatasetRoot(tmp_path / "root")
    assert run_cli("build", "--stage", "reals", "--root", str(root.path), "--recipe", str(sample_recipe), "--no-progress") == 0
    state = {"stage": "masks", "shard": "1/2", "started_at": "2026-01-01T00:00:00.000+00:00", "finished_at": None, "pending": 1, "planned": 1, "host": "n1", "pid": 7}
    root.manifest_dir("masks").mkdir(parents=True)
    (root.manifest_dir("masks") / "shard-1-of-2.state.json").write_text(json.dumps(state))
    capsys.readouterr()
    with FileLock(root.manifest_dir("masks") / "shard-0-of-2.lock", "stage masks, shard 0/2"):
        assert run_cli("status", str(root.path)) == 0
    out = capsys.readouterr().out
    timestamps = re.findall(r"\d{4}-\d\d-\d\d.\d\d:\d\d:\d\d[.+\d:]*(?: UTC)?", out)
    assert len(timestamps) == 4  # reals last finished, reals shard finished, masks shard started, lock holder started
    assert [stamp for stamp in timestamps if not re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", stamp)] == []
    assert "2026-01-01 00:00:00 UTC" in out
