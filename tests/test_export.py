"""export on the built sample: IMDLBenCo lists, a Hugging Face image folder and WebDataset shards."""

import io
import json
import logging
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brgen_build.errors import BrgenError
from brgen_build.export import Sample, export
from brgen_build.export.imdlbenco import balanced
from brgen_build.files import read_png
from brgen_build.layout import DatasetRoot
from conftest import run_cli

VAL_STUFF = "OpenCVTelea_Stuff_COCO_000000142238"


@pytest.fixture
def root(built_root) -> DatasetRoot:
    return built_root


def run_export(root: DatasetRoot, format: str, **options) -> list[Path]:
    return export(root, root.load_recipe(None), format, **options)


def read_list(path: Path) -> list:
    return json.loads(path.read_text())


def test_imdlbenco_lists(root):
    written = run_export(root, "imdlbenco")
    folder = root.path / "exports" / "imdlbenco"
    assert sorted(path.name for path in written) == sorted([
        "br-gen_train.json", "br-gen_test.json", "real_val.json", "stuff_val.json", "background_val.json",
        "diffusion_val.json", "gan_val.json", "mani_val.json", "test_datasets.json",
    ])
    train = read_list(folder / "br-gen_train.json")
    assert train[0] == [str(root.au("train", "COCO_000000439180")), "Negative"]
    # One real photo in train, so one of its two forgeries is kept; the seeded choice is fixed.
    assert train[1] == [str(root.tp("train", "OpenCVTelea_Background_COCO_000000439180")),
                        str(root.gt("train", "OpenCVTelea_Background_COCO_000000439180"))]
    assert len(train) == 2
    assert read_list(folder / "real_val.json") == [[str(root.au("val", "COCO_000000142238")), "Negative"]]
    assert read_list(folder / "stuff_val.json") == [[str(root.tp("val", VAL_STUFF)), str(root.gt("val", VAL_STUFF))]]
    assert len(read_list(folder / "mani_val.json")) == 2
    assert len(read_list(folder / "gan_val.json")) == 2
    assert read_list(folder / "diffusion_val.json") == []
    assert read_list(folder / "br-gen_test.json") == []
    test_sets = json.loads((folder / "test_datasets.json").read_text())
    assert sorted(test_sets) == ["BR-Gen_background_val", "BR-Gen_gan_val", "BR-Gen_mani_val", "BR-Gen_real_val", "BR-Gen_stuff_val"]
    assert test_sets["BR-Gen_stuff_val"] == str(folder / "stuff_val.json")


def test_balanced_ignores_order():
    def sample(name: str, label: int) -> Sample:
        return Sample(name, "train", label, f"train/Tp/{name}.png", None, None, name, "COCO")

    reals = [sample(f"COCO_{i}", 0) for i in range(3)]
    forgeries = [sample(f"LaMa_Stuff_COCO_{i}", 1) for i in range(10)]
    chosen = balanced(reals, forgeries, seed=7, purpose="train")
    shuffled = forgeries[:]
    random.Random(1).shuffle(shuffled)
    assert balanced(reals, shuffled, seed=7, purpose="train") == chosen
    assert len(chosen) == 6
    assert chosen[:3] == reals
    assert balanced(reals, forgeries[:2], seed=7, purpose="train") == reals + forgeries[:2]


def test_imdlbenco_dataset_class_loads_export(root):
    datasets = pytest.importorskip("IMDLBenCo.datasets", reason="imdlbenco is not installed (it needs torchvision, kept out of the test environment)")
    run_export(root, "imdlbenco")
    folder = root.path / "exports" / "imdlbenco"
    dataset = datasets.JsonDataset(str(folder / "mani_val.json"), is_resizing=True, output_size=(64, 64))
    assert len(dataset) == 2
    item = dataset[0]
    assert item["label"] == 1
    assert tuple(item["mask"].shape) == (1, 64, 64)
    assert float(item["mask"].max()) == 1.0
    negatives = datasets.JsonDataset(str(folder / "real_val.json"), is_resizing=True, output_size=(64, 64))
    assert negatives[0]["label"] == 0
    assert float(negatives[0]["mask"].max()) == 0.0


def test_hf_image_folder_loads(root, tmp_path):
    datasets = pytest.importorskip("datasets")
    run_export(root, "hf")
    folder = root.path / "exports" / "hf"
    loaded = datasets.load_dataset("imagefolder", data_dir=str(folder), cache_dir=str(tmp_path / "cache"))
    assert sorted(loaded) == ["train", "validation"]
    validation = loaded["validation"]
    assert validation.num_rows == 3
    assert {"image", "mask", "real", "label", "method", "kind", "source", "prompt", "seed"} <= set(validation.column_names)
    rows = {row["id"]: row for row in validation}
    forgery = rows[VAL_STUFF]
    assert (forgery["label"], forgery["method"], forgery["kind"], forgery["source"]) == (1, "opencv-telea", "Stuff", "COCO")
    assert isinstance(forgery["seed"], int)
    assert np.array_equal(np.asarray(forgery["mask"]), read_png(root.gt("val", VAL_STUFF)))
    assert np.array_equal(np.asarray(forgery["image"]), read_png(root.tp("val", VAL_STUFF)))
    assert np.array_equal(np.asarray(forgery["real"]), read_png(root.au("val", "COCO_000000142238")))
    real = rows["COCO_000000142238"]
    assert (real["label"], real["mask"], real["method"]) == (0, None, None)


def test_hf_export_hard_links(root):
    run_export(root, "hf")
    linked = root.path / "exports" / "hf" / "val" / "Tp" / f"{VAL_STUFF}.png"
    assert linked.stat().st_ino == root.tp("val", VAL_STUFF).stat().st_ino


def test_webdataset_shards(root):
    webdataset = pytest.importorskip("webdataset")
    run_export(root, "webdataset", shard_samples=2)
    folder = root.path / "exports" / "webdataset" / "val"
    shards = sorted(folder.glob("*.tar"))
    assert [path.name for path in shards] == ["brgen-val-000000.tar", "brgen-val-000001.tar"]
    samples = {sample["__key__"]: sample for sample in webdataset.WebDataset([str(path) for path in shards], shardshuffle=False)}
    assert sorted(samples) == ["COCO_000000142238", "OpenCVTelea_Background_COCO_000000142238", VAL_STUFF]
    forgery = samples[VAL_STUFF]
    assert forgery["png"] == root.tp("val", VAL_STUFF).read_bytes()
    assert forgery["mask.png"] == root.gt("val", VAL_STUFF).read_bytes()
    assert json.loads(forgery["json"])["real_id"] == "COCO_000000142238"
    real_mask = np.asarray(Image.open(io.BytesIO(samples["COCO_000000142238"]["mask.png"])))
    assert real_mask.shape == (427, 640)
    assert int(real_mask.max()) == 0


def test_webdataset_log_names_final_folder(root, caplog):
    pytest.importorskip("webdataset")
    with caplog.at_level(logging.INFO, logger="brgen_build.export.webdataset_shards"):
        run_export(root, "webdataset")
    folder = root.path / "exports" / "webdataset"
    assert caplog.messages == [f"export: train: 3 samples in {folder / 'train'}", f"export: val: 3 samples in {folder / 'val'}"]


def test_export_hint_names_both_installs(root, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "webdataset", None)
    assert run_cli("export", str(root.path), "--format", "webdataset") == 2
    error = capsys.readouterr().err
    assert "install it with pip install 'brgen[export]' (or pip install -e '.[export]' in a clone of brgen)" in error


def test_export_rejects_missing_file(root):
    root.tp("val", VAL_STUFF).unlink()
    with pytest.raises(BrgenError, match=f"1 file\\(s\\) listed in .* are missing or have another size than recorded: val/Tp/{VAL_STUFF}.png"):
        run_export(root, "imdlbenco")
