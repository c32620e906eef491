"""The whole build on the two bundled photos: reals, masks, opencv-telea forgeries, verify, re-run."""

import os
import stat

import numpy as np

from brgen_build.files import read_png
from brgen_build.layout import DatasetRoot
from brgen_build.manifest import read_records
from conftest import run_cli


def snapshot(root: DatasetRoot) -> dict:
    """Modification times of the dataset's files; shard lock and state files, rewritten by every run, are left out."""
    return {
        path.relative_to(root.path).as_posix(): path.stat().st_mtime_ns
        for path in root.path.rglob("*")
        if path.is_file() and not path.name.endswith((".lock", ".state.json"))
    }


def test_build_writes_release_layout(built_root):
    names = sorted(p.relative_to(built_root.path).as_posix() for p in built_root.path.glob("*/[ATG]*/*.png"))
    assert names == [
        "train/Au/COCO_000000439180.png",
        "train/Gt/OpenCVTelea_Background_COCO_000000439180_mask.png",
        "train/Gt/OpenCVTelea_Stuff_COCO_000000439180_mask.png",
        "train/Tp/OpenCVTelea_Background_COCO_000000439180.png",
        "train/Tp/OpenCVTelea_Stuff_COCO_000000439180.png",
        "val/Au/COCO_000000142238.png",
        "val/Gt/OpenCVTelea_Background_COCO_000000142238_mask.png",
        "val/Gt/OpenCVTelea_Stuff_COCO_000000142238_mask.png",
        "val/Tp/OpenCVTelea_Background_COCO_000000142238.png",
        "val/Tp/OpenCVTelea_Stuff_COCO_000000142238.png",
    ]


def test_real_photos_keep_their_pixels(built_root):
    from PIL import Image

    from conftest import SAMPLE_DIR

    real = read_png(built_root.au("val", "COCO_000000142238"))
    with Image.open(SAMPLE_DIR / "images" / "000000142238.jpg") as original:
        assert np.array_equal(real, np.asarray(original.convert("RGB")))
    record = read_records(built_root.manifest_dir("reals"))["COCO_000000142238"]
    assert (record["width"], record["height"]) == (640, 427)
    assert record["member"] == "000000142238.jpg"


def test_forgery_equals_real_outside_mask(built_root):
    real = read_png(built_root.au("train", "COCO_000000439180"))
    forgery = read_png(built_root.tp("train", "OpenCVTelea_Stuff_COCO_000000439180"))
    gt = read_png(built_root.gt("train", "OpenCVTelea_Stuff_COCO_000000439180"))
    outside = gt == 0
    assert np.array_equal(forgery[outside], real[outside])
    assert np.any(forgery[~outside] != real[~outside])


def test_forgery_record_is_complete(built_root):
    record = read_records(built_root.manifest_dir("inpaint/opencv-telea"))["OpenCVTelea_Background_COCO_000000142238"]
    assert record["status"] == "ok"
    assert record["real"] == "COCO_000000142238"
    assert record["kind"] == "Background"
    assert record["settings"] == {"radius": 3}
    assert isinstance(record["seed"], int)
    assert record["changed_outside_before_paste"] == 0.0
    assert set(record["files"]) == {"tp", "gt"}


def test_rerun_writes_nothing(built_root, sample_recipe, capsys):
    before = snapshot(built_root)
    assert run_cli("build", "--stage", "all", "--root", str(built_root.path), "--no-progress") == 0
    assert snapshot(built_root) == before
    assert "2 already done, 0 ok" in capsys.readouterr().out


def test_deleted_forgery_is_redone(built_root):
    path = built_root.tp("val", "OpenCVTelea_Stuff_COCO_000000142238")
    original = path.read_bytes()
    path.unlink()
    assert run_cli("inpaint", "--method", "opencv-telea", "--root", str(built_root.path), "--no-progress") == 0
    assert path.read_bytes() == original


def test_unknown_method_lists_available(tmp_path, sample_recipe, capsys):
    assert run_cli("inpaint", "--method", "lamma", "--root", str(tmp_path / "r"), "--recipe", str(sample_recipe)) == 2
    err = capsys.readouterr().err
    assert "unknown method 'lamma'; available: opencv-telea, lama" in err
    assert "Did you mean 'lama'?" in err


def test_method_missing_from_recipe_is_an_error(tmp_path, sample_recipe, capsys):
    assert run_cli("inpaint", "--method", "lama", "--root", str(tmp_path / "r"), "--recipe", str(sample_recipe)) == 2
    assert "method 'lama' is not under `methods`" in capsys.readouterr().err


def test_quickstart_builds_and_verifies(tmp_path, capsys):
    assert run_cli("quickstart", "--out", str(tmp_path / "sample"), "--no-progress") == 0
    out = capsys.readouterr().out
    assert "not run, weights not found: lama, mat, sdxl, brushnet, powerpaint." in out
    assert "OK: every expected file is present" in out
    assert len(list((tmp_path / "sample").glob("*/Tp/OpenCVTelea_*.png"))) == 4


def test_dataset_files_follow_the_umask(built_root):
    umask = os.umask(0)
    os.umask(umask)
    paths = [built_root.au("val", "COCO_000000142238"), built_root.recipe_path, built_root.tp("train", "OpenCVTelea_Stuff_COCO_000000439180")]
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


def test_stage_before_its_input_is_an_error(tmp_path, sample_recipe, capsys):
    root = str(tmp_path / "root")
    assert run_cli("build", "--stage", "masks", "--root", root, "--recipe", str(sample_recipe), "--no-progress") == 2
    assert "has no real photos recorded yet; run `brgen build --stage reals` first" in capsys.readouterr().err
    assert run_cli("build", "--stage", "reals", "--root", root, "--no-progress") == 0
    assert run_cli("inpaint", "--method", "opencv-telea", "--root", root, "--no-progress") == 2
    assert "has no masks recorded yet; run `brgen build --stage masks` first" in capsys.readouterr().err


def test_annotation_file_of_wrong_format_is_named(tmp_path, capsys):
    from conftest import sample_recipe_data, write_recipe

    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"foo": 1}')
    data = sample_recipe_data()
    data["sources"][0]["annotations"] = str(wrong)
    data["methods"] = {"opencv-telea": {}}
    recipe = write_recipe(tmp_path, data)
    root = str(tmp_path / "root")
    assert run_cli("build", "--stage", "reals", "--root", root, "--recipe", str(recipe), "--no-progress") == 0
    assert run_cli("build", "--stage", "masks", "--root", root, "--no-progress") == 2
    assert f"annotation file {wrong} has no `images` list or `annotations` list" in capsys.readouterr().err
