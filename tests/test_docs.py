from pathlib import Path

TOP = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command():
    ci_command = (TOP / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci_command in (TOP / "README.md").read_text()


def test_readme_names_the_quickstart_command():
    assert "brgen quickstart --out brgen-sample" in (TOP / "README.md").read_text()


def test_readme_links_exist():
    import re

    links = re.findall(r"\]\(((?:docs|benchmarks)/[^)]+)\)", (TOP / "README.md").read_text())
    assert len(links) >= 8
    for link in links:
        assert (TOP / link).is_file(), link


def test_download_commands_exist_in_huggingface_hub():
    # huggingface_hub 1.0 removed the `huggingface-cli` command; its downloads are `hf download`.
    stale = []
    for folder in ("brgen_build", "inpainters", "mask_gen", "detector", "manifests", "docs", "benchmarks", "examples"):
        for path in sorted((TOP / folder).rglob("*")):
            if path.suffix in (".py", ".md", ".yaml") and "huggingface-cli download" in path.read_text(encoding="utf-8"):
                stale.append(str(path.relative_to(TOP)))
    if "huggingface-cli download" in (TOP / "README.md").read_text(encoding="utf-8"):
        stale.append("README.md")
    assert stale == []
