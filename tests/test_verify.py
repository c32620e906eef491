"""verify on the built sample: a clean dataset passes, and each kind of damage is named with its file."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from brgen_build.files import read_png, sha256_file
from brgen_build.layout import DatasetRoot
from brgen_build.manifest import ManifestWriter, read_records
from brgen_build.verify import release_name_problem, verify
from conftest import run_cli, write_recipe

STUFF = "OpenCVTelea_Stuff_COCO_000000142238"
BACKGROUND = "OpenCVTelea_Background_COCO_000000142238"
STAGE = "inpaint/opencv-telea"


@pytest.fixture
def root(built_root) -> DatasetRoot:
    return built_root


def run_verify(root: DatasetRoot, workers: int = 1, **options):
    return verify(root, root.load_recipe(None), workers=workers, **options)


def rerecord(root: DatasetRoot, stage: str, item: str, role: str, sha256: str | None = None) -> None:
    """Append a newer record of `item` whose `role` file has the given sha256 (default: the file's own)."""
    record = dict(read_records(root.manifest_dir(stage))[item])
    entry = dict(record["files"][role])
    path = root.absolute(entry["path"])
    entry["sha256"] = sha256 or sha256_file(path)
    entry["bytes"] = path.stat().st_size
    record["files"] = {**record["files"], role: entry}
    record.pop("finished_at")
    with ManifestWriter(root.manifest_dir(stage) / "shard-0-of-1.jsonl") as writer:
        writer.append(record)


def checks_named(report) -> list[tuple[str, str]]:
    return sorted((problem.check, problem.file) for problem in report.problems)


def test_clean_dataset_passes(root):
    report = run_verify(root)
    assert report.problems == []
    assert report.files_checked == 14
    row = report.counts[("val", "COCO", "Stuff", "opencv-telea")]
    assert (row["expected"], row["found"], row["skipped"], row["missing"], row["invalid"]) == (1, 1, 0, 0, 0)
    assert report.recipe_counts[0] == {"scope": "split", "name": "train", "expected": 1, "records": 1, "ok": 1, "skipped": 0}


def test_truncated_png_is_named(root):
    path = root.tp("val", STUFF)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    rerecord(root, STAGE, STUFF, "tp")
    report = run_verify(root)
    assert checks_named(report) == [("decode", f"val/Tp/{STUFF}.png")]
    assert "does not decode fully" in report.problems[0].message


def test_non_image_file_is_named(root):
    root.tp("val", STUFF).write_text("<html>rate limited</html>")
    rerecord(root, STAGE, STUFF, "tp")
    report = run_verify(root)
    assert [problem.line() for problem in report.problems] == [f"val/Tp/{STUFF}.png: is not a PNG or any other image Pillow can read"]


def test_forgery_resized_by_one_pixel_is_named(root):
    path = root.tp("val", STUFF)
    forgery = read_png(path)
    Image.fromarray(forgery[:, :-1]).save(path)
    rerecord(root, STAGE, STUFF, "tp")
    report = run_verify(root)
    assert checks_named(report) == [("dimensions", f"val/Tp/{STUFF}.png")]
    assert report.problems[0].message == "is 639x427 but its real photo is 640x427"


def test_zero_one_mask_is_named(root):
    path = root.gt("val", STUFF)
    Image.fromarray(read_png(path) // 255).save(path)
    rerecord(root, STAGE, STUFF, "gt")
    report = run_verify(root)
    assert checks_named(report) == [("mask_values", f"val/Gt/{STUFF}_mask.png")]
    assert report.problems[0].message.startswith("mask values [0, 1] are not only 0 and 255")


def test_pixel_outside_mask_is_named(root):
    path = root.tp("val", STUFF)
    gt = read_png(root.gt("val", STUFF))
    forgery = read_png(path).copy()
    y, x = np.argwhere(gt == 0)[0]
    forgery[y, x] = 255 - forgery[y, x]
    Image.fromarray(forgery).save(path)
    rerecord(root, STAGE, STUFF, "tp")
    report = run_verify(root)
    assert checks_named(report) == [("outside_mask", f"val/Tp/{STUFF}.png")]
    assert report.problems[0].message == f"1 pixel(s) outside the Gt mask differ from the real photo (first at x={x}, y={y})"
    assert report.counts[("val", "COCO", "Stuff", "opencv-telea")]["invalid"] == 1


def test_missing_gt_is_named(root, capsys):
    root.gt("val", BACKGROUND).unlink()
    capsys.readouterr()
    assert run_cli("verify", str(root.path), "--no-progress") == 1
    out = capsys.readouterr().out
    assert f"val/Gt/{BACKGROUND}_mask.png: missing; the manifest lists it" in out
    assert "FAILED: 1 problem(s):" in out


def test_extra_files_are_orphans(root):
    extra = root.tp("val", "OpenCVTelea_Stuff_COCO_000000999999")
    shutil.copyfile(root.tp("val", STUFF), extra)
    (root.path / "val" / "Gt" / "notes.txt").write_text("x")
    report = run_verify(root)
    assert checks_named(report) == [
        ("name", "val/Gt/notes.txt"),
        ("orphan", "val/Gt/notes.txt"),
        ("orphan", "val/Tp/OpenCVTelea_Stuff_COCO_000000999999.png"),
    ]


def test_manifest_hash_mismatch_is_named(root):
    rerecord(root, STAGE, STUFF, "tp", sha256="0" * 64)
    report = run_verify(root)
    assert checks_named(report) == [("sha256", f"val/Tp/{STUFF}.png")]
    assert "differs from the manifest's 0000000000000000..." in report.problems[0].message


def test_gt_differing_from_mask_is_named(root):
    path = root.gt("val", STUFF)
    gt = read_png(path).copy()
    y, x = np.argwhere(gt == 0)[0]
    gt[y, x] = 255
    Image.fromarray(gt).save(path)
    rerecord(root, STAGE, STUFF, "gt")
    report = run_verify(root)
    assert checks_named(report) == [("gt_mask", f"val/Gt/{STUFF}_mask.png")]


@pytest.mark.parametrize(("recorded_offset", "checks"), [(0.0, []), (0.01, [("changed_share", f"val/Tp/{STUFF}.png")])])
def test_full_regeneration_share(root, recorded_offset, checks):
    path = root.tp("val", STUFF)
    gt = read_png(root.gt("val", STUFF))
    forgery = read_png(path).copy()
    outside = np.argwhere(gt == 0)[:10]
    forgery[outside[:, 0], outside[:, 1]] = 255 - forgery[outside[:, 0], outside[:, 1]]
    Image.fromarray(forgery).save(path)
    record = dict(read_records(root.manifest_dir(STAGE))[STUFF])
    record.pop("finished_at")
    record["full_regeneration"] = True
    record["changed_outside_before_paste"] = round(10 / int(np.count_nonzero(gt == 0)) + recorded_offset, 6)
    record["files"] = {**record["files"], "tp": {**record["files"]["tp"], "sha256": sha256_file(path), "bytes": path.stat().st_size}}
    with ManifestWriter(root.manifest_dir(STAGE) / "shard-0-of-1.jsonl") as writer:
        writer.append(record)
    report = run_verify(root)
    assert checks_named(report) == checks


def test_failed_record_counts_as_missing(root):
    with ManifestWriter(root.manifest_dir(STAGE) / "shard-0-of-1.jsonl") as writer:
        writer.append({"id": STUFF, "split": "val", "stage": STAGE, "status": "failed", "reason": "RuntimeError: out of memory"})
    report = run_verify(root)
    row = report.counts[("val", "COCO", "Stuff", "opencv-telea")]
    assert (row["found"], row["missing"]) == (0, 1)
    assert [(p.check, p.item) for p in report.problems if p.check != "orphan"] == [("incomplete", STUFF)]
    assert "forgery failed: RuntimeError: out of memory; run `brgen inpaint --method opencv-telea`" in report.problems[0].message


def test_skipped_mask_is_not_a_problem(root):
    mask_id = "Stuff_COCO_000000142238"
    record = dict(read_records(root.manifest_dir("masks"))[mask_id], status="skipped", reason="no stuff region")
    record.pop("finished_at")
    with ManifestWriter(root.manifest_dir("masks") / "shard-0-of-1.jsonl") as writer:
        writer.append(record)
    report = run_verify(root)
    assert report.counts[("val", "COCO", "Stuff", "-")]["skipped"] == 1
    assert report.skipped == [f"{mask_id}: no stuff region"]
    # The forgery made before the mask was skipped is now a record without an ok mask, and its files orphans.
    assert ("record", STUFF) in [(p.check, p.item) for p in report.problems]


def test_worker_pool_finds_the_same(root):
    root.gt("val", BACKGROUND).unlink()
    path = root.tp("train", "OpenCVTelea_Stuff_COCO_000000439180")
    path.write_bytes(path.read_bytes()[:1000])
    in_process = run_verify(root, workers=1)
    pooled = run_verify(root, workers=2)
    assert checks_named(pooled) == checks_named(in_process)
    assert len(pooled.problems) == 3
    assert pooled.files_checked == in_process.files_checked


def test_json_report(root, capsys):
    capsys.readouterr()
    assert run_cli("verify", str(root.path), "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    rows = {(r["split"], r["source"], r["kind"], r["method"]): r for r in report["counts"]}
    assert rows[("train", "COCO", "Background", "opencv-telea")]["found"] == 1
    assert rows[("val", "COCO", "-", "-")]["expected"] == 1
    assert report["files_checked"] == 14


def test_against_release(root, tmp_path):
    release = tmp_path / "release"
    for part in ("Tp", "Gt"):
        (release / "val" / part).mkdir(parents=True)
    stuff_mask = root.mask("val", "Stuff", "COCO_000000142238")
    shutil.copyfile(stuff_mask, release / "val" / "Gt" / "LaMa_Stuff_COCO_000000142238_mask.png")
    background = read_png(root.mask("val", "Background", "COCO_000000142238")).copy()
    white = int(np.count_nonzero(background))
    background[: background.shape[0] // 2] = 0
    Image.fromarray(background).save(release / "val" / "Gt" / "LaMa_Background_COCO_000000142238_mask.png")
    shutil.copyfile(root.tp("val", STUFF), release / "val" / "Tp" / f"{STUFF}.png")
    shutil.copyfile(root.tp("val", STUFF), release / "val" / "Tp" / "LaMa_Stuff_COCO_000000000520.png")
    (release / "RealImage" / "COCO").mkdir(parents=True)
    (release / "RealImage" / "COCO" / "COCO_image_list.txt").write_text("000000142238.jpg\n000000000520.jpg\n")

    report = run_verify(root, against=release)
    against = report.against
    assert report.problems == []
    assert (against["forgeries"]["release"], against["forgeries"]["covered"]) == (2, 1)
    assert against["forgeries"]["missing_examples"] == ["LaMa_Stuff_COCO_000000000520"]
    assert against["forgeries"]["by_method_kind"]["OpenCVTelea Stuff"] == {"release": 1, "covered": 1}
    assert (against["reals"]["release"], against["reals"]["covered"]) == (2, 1)
    assert against["image_lists"]["COCO"]["covered"] == 1
    assert against["mask_iou"]["Stuff"]["mean"] == 1.0
    assert against["mask_iou"]["Background"]["mean"] == round(int(np.count_nonzero(background)) / white, 4)
    assert "Stuff mask IoU over 1 photo(s): mean 1.0" in report.summary()


def test_against_unreadable_release_mask(root, tmp_path):
    released = tmp_path / "release" / "val" / "Gt" / "LaMa_Stuff_COCO_000000142238_mask.png"
    released.parent.mkdir(parents=True)
    released.write_text("<html>rate limited</html>")
    report = run_verify(root, against=tmp_path / "release")
    assert [problem.message for problem in report.problems] == [
        f"cannot compare with {released}: the release mask is not a PNG or any other image Pillow can read"
    ]


def test_against_folder_without_release_files(root, tmp_path):
    (tmp_path / "empty").mkdir()
    assert run_cli("verify", str(root.path), "--against", str(tmp_path / "empty")) == 2


@pytest.mark.parametrize(
    ("name", "part", "problem"),
    [
        ("COCO_000000142238.png", "Au", None),
        ("ImageNet_n06359193_84719.png", "Au", None),
        ("COCO_000000142238.jpg", "Au", "is not a .png file; the release stores PNG only"),
        ("Flickr_000000142238.png", "Au", "source token 'Flickr' is not one of the recipe's (COCO, ImageNet)"),
        ("MAT_Stuff_COCO_000000142238.png", "Tp", None),
        ("MAT_Sky_COCO_000000142238.png", "Tp", "name does not follow {Method}_{Kind}_{Source}_{stem}.png"),
        ("MAT_Stuff_COCO_000000142238_mask.png", "Gt", None),
        ("MAT_Stuff_COCO_000000142238.png", "Gt", "Gt names end in `_mask.png`"),
        ("Background_COCO_000000142238.png", "masks", None),
        ("Sky_COCO_000000142238.png", "masks", "mask names start with the kind, Stuff_ or Background_"),
    ],
)
def test_release_names(name, part, problem):
    assert release_name_problem(name, part, {"COCO", "ImageNet"}) == problem


def test_folder_without_recipe_is_rejected(tmp_path, capsys):
    assert run_cli("verify", str(tmp_path)) == 2
    assert f"error: {tmp_path} is not a brgen dataset root (no recipe.yaml)" in capsys.readouterr().err


def build_reals_with_truncated_train(tmp_path) -> DatasetRoot:
    """Build the reals of 4 JPEGs for `splits: {train: 1, test: 0, val: 1}`, where both train photos are truncated."""
    from brgen_build.stages.reals import assign_splits
    from photo_archives import photo_bytes, write_folder

    photos = {f"{number:012d}.jpg": photo_bytes(number) for number in range(1, 5)}
    splits = {"train": 1, "test": 0, "val": 1}
    assignment = assign_splits([f"COCO_{number:012d}" for number in range(1, 5)], splits, seed=5)
    for name in photos:
        if assignment[f"COCO_{name[:-4]}"] == "train":
            photos[name] = photos[name][: len(photos[name]) // 2]
    folder = write_folder(tmp_path / "photos", photos)
    data = {"name": "short-split", "seed": 5, "sources": [{"token": "COCO", "kind": "coco", "images": str(folder)}], "splits": splits}
    recipe = write_recipe(tmp_path, data)
    assert run_cli("build", "--stage", "reals", "--root", str(tmp_path / "root"), "--recipe", str(recipe), "--no-progress") == 0
    return DatasetRoot(tmp_path / "root")


def test_split_short_of_usable_photos_warns(tmp_path):
    root = build_reals_with_truncated_train(tmp_path)
    report = verify(root, root.load_recipe(None), methods=[])
    train = report.recipe_counts[0]
    assert train == {"scope": "split", "name": "train", "expected": 1, "records": 2, "ok": 0, "skipped": 2}
    assert report.warnings == [
        "split train: 0 usable real photo(s), fewer than the 1 the recipe requests: 2 of its 2 record(s) are skipped "
        "with a recorded reason, and skipped photos are not replaced by others"
    ]
    assert not any(problem.check == "recipe" for problem in report.problems)


def test_split_shortfall_in_summary_and_json(tmp_path, capsys):
    root = build_reals_with_truncated_train(tmp_path)
    capsys.readouterr()
    run_cli("verify", str(root.path), "--json")
    warnings = json.loads(capsys.readouterr().out)["warnings"]
    assert warnings[0].startswith("split train: 0 usable real photo(s)")
    run_cli("verify", str(root.path), "--no-progress")
    out = capsys.readouterr().out
    assert "recipe: split train: 1 real photo(s) requested, 2 recorded, 0 usable (2 skipped)" in out
    assert "warning: split train: 0 usable real photo(s)" in out
