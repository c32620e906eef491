"""The detector's atomic writes create files as open() would: mode 0o666 without the bits of the umask."""

import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from detector.files import write_atomically, write_json, write_text


@pytest.fixture
def restore_umask():
    """Restore the process umask that a test changes."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_file_follows_umask(tmp_path, restore_umask, mask, mode):
    os.umask(mask)
    write_json(tmp_path / "run.json", {"epochs": 1})
    assert os.stat(tmp_path / "run.json").st_mode & 0o777 == mode


def test_replaced_file_follows_umask(tmp_path, restore_umask):
    path = tmp_path / "metrics.md"
    write_text(path, "first\n")
    write_text(path, "second\n")
    assert path.read_text() == "second\n"
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert [entry.name for entry in tmp_path.iterdir()] == ["metrics.md"]


def test_safetensors_file_follows_umask(tmp_path, restore_umask):
    # save_file writes its own file of mode 0o600 and renames it over the path it is given.
    path = tmp_path / "model.safetensors"
    write_atomically(path, lambda temporary: save_file({"weight": torch.ones(2)}, temporary))
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert load_file(path)["weight"].tolist() == [1.0, 1.0]


def test_failed_write_leaves_no_temporary_file(tmp_path):
    def fail(temporary):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(tmp_path / "run.json", fail)
    assert list(tmp_path.iterdir()) == []
