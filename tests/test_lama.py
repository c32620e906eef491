"""LaMa's real loading and inference path, on tiny TorchScript models with big-lama.pt's call signature, and
brgen's full-size big-lama architecture against the official parameter listing."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from brgen_build.layout import DatasetRoot
from brgen_build.manifest import read_records
from conftest import describe_state, read_forgery, read_listing, sample_photo, sample_recipe_data, write_recipe
from inpainters.base import InpaintRequest, MethodError
from inpainters.lama import LaMa
from inpainters.lama_arch import FFCResNetGenerator, LamaInpaintingModel
from test_pipeline import run_cli

# big-lama.pt is TorchScript, so the tiny models are too; torch 2.10+ marks TorchScript as deprecated.
pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.trace_method` is deprecated:DeprecationWarning"),
]

LISTING = Path(__file__).resolve().parent / "data" / "listings" / "lama_big_lama_generator.tsv"


class TinyLama(torch.nn.Module):
    """`model(image, mask)`: image [B,3,H,W] in 0..1, mask [B,1,H,W] with 1 = hole, as big-lama.pt."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        assert image.shape[2] % 8 == 0, "height must be a multiple of 8"
        assert image.shape[3] % 8 == 0, "width must be a multiple of 8"
        masked = image * (1 - mask)
        return torch.sigmoid(self.conv(torch.cat([masked, mask], dim=1)))


@pytest.fixture
def tiny_lama(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "big-lama.pt"
    torch.jit.script(TinyLama()).save(str(path))
    return path


def build_with_lama(tmp_path, weights, name="root"):
    data = sample_recipe_data()
    data["methods"] = {"lama": {"weights": str(weights), "device": "cpu"}}
    recipe = write_recipe(tmp_path, data, f"{name}.yaml")
    root = tmp_path / name
    assert run_cli("build", "--stage", "all", "--root", str(root), "--recipe", str(recipe), "--no-progress") == 0
    return DatasetRoot(root)


def test_lama_builds_a_verified_dataset(tmp_path, tiny_lama):
    root = build_with_lama(tmp_path, tiny_lama)
    forgery_id = "LaMa_Stuff_COCO_000000142238"
    real, forgery, hole = read_forgery(root, "val", "COCO_000000142238", forgery_id)
    assert forgery.shape == real.shape == (427, 640, 3)
    assert np.array_equal(forgery[~hole], real[~hole])
    assert np.mean(np.any(forgery[hole] != real[hole], axis=1)) > 0.9

    record = read_records(root.manifest_dir("inpaint/lama"))[forgery_id]
    assert record["checkpoint"]["md5"] == hashlib.md5(tiny_lama.read_bytes()).hexdigest()
    assert record["device"] == "cpu"


def test_lama_is_deterministic(tmp_path, tiny_lama):
    first = build_with_lama(tmp_path, tiny_lama, "first")
    second = build_with_lama(tmp_path, tiny_lama, "second")
    name = "LaMa_Background_COCO_000000439180"
    assert first.tp("train", name).read_bytes() == second.tp("train", name).read_bytes()


def test_batch_equals_single_images(tiny_lama):
    rng = np.random.default_rng(3)
    requests = []
    for index in range(2):
        mask = np.zeros((37, 50), np.uint8)
        mask[5:20, 10 + index : 30] = 255
        requests.append(InpaintRequest(f"item{index}", rng.integers(0, 256, (37, 50, 3), dtype=np.uint8), mask, seed=index))
    lama = LaMa({"weights": str(tiny_lama), "batch_size": 2}, device="cpu")
    lama.load()
    batched = lama.inpaint(requests)
    single = [lama.inpaint([request])[0] for request in requests]
    for together, alone in zip(batched, single):
        assert together.image.shape == (37, 50, 3)
        assert np.abs(together.image.astype(int) - alone.image.astype(int)).max() <= 1


def test_grey_mask_values_are_thresholded_and_recorded(tiny_lama):
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 255
    mask[0, 0] = 3  # JPEG noise: not a hole
    lama = LaMa({"weights": str(tiny_lama)}, device="cpu")
    lama.load()
    result = lama.inpaint([InpaintRequest("x", np.full((16, 16, 3), 128, np.uint8), mask, seed=0)])[0]
    assert result.info == {"mask_values_thresholded": 1}


def test_missing_weights_fail_before_work(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("BRGEN_LAMA_WEIGHTS", raising=False)
    monkeypatch.delenv("BRGEN_WEIGHTS_DIR", raising=False)
    data = sample_recipe_data()
    data["methods"] = {"lama": {}}
    recipe = write_recipe(tmp_path, data)
    root = tmp_path / "root"
    assert run_cli("build", "--stage", "reals", "--root", str(root), "--recipe", str(recipe), "--no-progress") == 0
    assert run_cli("build", "--stage", "masks", "--root", str(root), "--no-progress") == 0
    assert run_cli("inpaint", "--method", "lama", "--root", str(root), "--no-progress") == 2
    error = capsys.readouterr().err
    assert "weight file big-lama.pt not found" in error
    assert "BRGEN_LAMA_WEIGHTS" in error
    assert not (root / "manifests" / "inpaint").exists()


def test_weights_from_environment(tiny_lama, monkeypatch):
    monkeypatch.setenv("BRGEN_LAMA_WEIGHTS", str(tiny_lama))
    lama = LaMa({}, device="cpu")
    lama.check()
    assert lama.weights_path == tiny_lama


def test_unknown_parameter_is_rejected():
    with pytest.raises(MethodError, match="unknown parameter"):
        LaMa({"weight": "x"})


def test_full_size_architecture_matches_official_listing():
    official = read_listing(LISTING)
    with torch.device("meta"):
        generator = FFCResNetGenerator()
    ours = describe_state(generator)
    assert sorted(set(official) - set(ours)) == []
    assert sorted(set(ours) - set(official)) == []
    assert {name: ours[name] for name in official if ours[name] != official[name]} == {}
    assert sum(parameter.numel() for parameter in generator.parameters()) == 50_975_875


def test_traced_brgen_architecture_loads_and_inpaints(tmp_path):
    torch.manual_seed(0)
    model = LamaInpaintingModel(FFCResNetGenerator(ngf=8, n_blocks=1)).eval()
    path = tmp_path / "big-lama.pt"
    torch.jit.trace(model, (torch.rand(1, 3, 64, 64), torch.ones(1, 1, 64, 64)), check_trace=False).save(str(path))

    real = sample_photo()[100:190, 200:350]
    mask = np.zeros(real.shape[:2], np.uint8)
    mask[20:70, 30:110] = 255
    lama = LaMa({"weights": str(path)}, device="cpu")
    lama.load()
    result = lama.inpaint([InpaintRequest("x", np.ascontiguousarray(real), mask, seed=0)])[0]
    hole = mask == 255
    assert result.image.shape == (90, 150, 3)
    assert np.array_equal(result.image[~hole], real[~hole])
    assert np.mean(np.any(result.image[hole] != real[hole], axis=1)) > 0.9


def test_quickstart_adds_lama_once_its_weights_appear(tmp_path, tiny_lama, monkeypatch):
    out = str(tmp_path / "sample")
    assert run_cli("quickstart", "--out", out, "--no-progress") == 0
    assert run_cli("verify", out) == 0
    assert list((tmp_path / "sample").glob("*/Tp/LaMa_*.png")) == []

    monkeypatch.setenv("BRGEN_LAMA_WEIGHTS", str(tiny_lama))
    assert run_cli("quickstart", "--out", out, "--no-progress") == 0
    assert run_cli("verify", out) == 0
    assert len(list((tmp_path / "sample").glob("*/Tp/LaMa_*.png"))) == 4
