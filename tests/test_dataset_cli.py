"""How the dataset commands (verify, export, report, status) find the dataset root and where reports go."""

from conftest import run_cli


def test_report_filter_rejects_non_root(tmp_path, capsys):
    assert run_cli("report", "filter", str(tmp_path)) == 2
    assert f"error: {tmp_path} is not a brgen dataset root (no recipe.yaml)" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
