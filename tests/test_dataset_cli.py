"""How the dataset commands (verify, export, report, status) find the dataset root and where reports go."""

import click
import pytest

from brgen_build.cli import cli
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


def test_reports_share_one_folder(built_root, capsys):
    root = built_root.path
    assert run_cli("report", str(root)) == 0
    assert run_cli("report", "filter", str(root)) == 0
    assert run_cli("report", "masks", "--root", str(root), "--count", "1", "--tile-width", "64") == 0
    assert sorted(path.name for path in (root / "reports").iterdir()) == ["dataset", "filter.html", "masks.png"]
    assert (root / "reports" / "dataset" / "report.html").is_file()
    assert not (root / "report").exists()


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from all_commands(command, (*prefix, name))


@pytest.mark.parametrize("command", [pytest.param(command, id=" ".join(path)) for path, command in all_commands(cli)])
def test_usage_shows_root_metavar(command):
    with click.Context(command, info_name=command.name) as context:
        usage = command.get_usage(context)
    assert "ROOT_ARGUMENT" not in usage


def test_report_group_help_names_folder(capsys):
    assert run_cli("report", "--help") == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "Write HTML and PNG reports into ROOT/reports/." in help_text
