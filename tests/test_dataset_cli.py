"""How the dataset commands (verify, export, report, status) find the dataset root and where reports go."""

import pytest

from conftest import run_cli


def test_report_filter_rejects_non_root(tmp_path, capsys):
    assert run_cli("report", "filter", str(tmp_path)) == 2
    assert f"error: {tmp_path} is not a brgen dataset root (no recipe.yaml)" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


ROOT_COMMANDS = [("verify",), ("export", "--format", "imdlbenco"), ("report", "dataset"), ("report", "filter"), ("status",)]


@pytest.mark.parametrize("command", ROOT_COMMANDS, ids=" ".join)
def test_root_and_root_option_differ(tmp_path, capsys, command):
    first, second = tmp_path / "first", tmp_path / "second"
    assert run_cli(*command, str(first), "--root", str(second)) == 2
    assert f"error: ROOT is {first} but --root is {second}, a different folder; give the dataset root once, as ROOT or as --root" in capsys.readouterr().err


def test_root_and_same_root_option(built_root, capsys):
    assert run_cli("status", str(built_root.path), "--root", f"{built_root.path}/.") == 0
    assert "inpaint/opencv-telea" in capsys.readouterr().out
