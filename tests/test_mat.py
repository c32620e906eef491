"""MAT: the full-size generator against the released state-dict listing, and the real loading and inference path
on a tiny generator that the tests build, save and load with weights_only=True and strict=True."""

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from brgen_build.layout import DatasetRoot
from brgen_build.manifest import read_records
from conftest import describe_state, read_forgery, read_listing, sample_photo, sample_recipe_data, write_recipe
from inpainters.base import InpaintRequest, MethodError
from inpainters.mat import MAT
from inpainters.mat_arch import TINY_CONFIG as TINY
from inpainters.mat_arch import MATConfig, MATGenerator
from inpainters.weights import MissingWeightsError
from test_pipeline import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

LISTINGS = Path(__file__).resolve().parent / "data" / "listings"


@pytest.mark.parametrize(
    ("listing", "use_noise", "count"),
    [("mat_places_512_fulldata_g.tsv", False, 465), ("mat_authors_generator_with_noise.tsv", True, 487)],
)
def test_full_size_generator_matches_official_listing(listing, use_noise, count):
    with torch.device("meta"):
        model = MATGenerator(MATConfig(use_noise=use_noise))
    official = read_listing(LISTINGS / listing)
    ours = describe_state(model)
    assert sorted(set(official) - set(ours)) == []
    assert sorted(set(ours) - set(official)) == []
    assert {name: ours[name] for name in official if ours[name] != official[name]} == {}
    assert len(ours) == count


def save_tiny_generator(path: Path, config: MATConfig = TINY, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = MATGenerator(config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or name.endswith("noise_strength"):
                parameter.copy_(torch.randn_like(parameter) * 0.1)
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture
def tiny_mat(tmp_path, monkeypatch):
    monkeypatch.setattr(MAT, "config", TINY)
    return save_tiny_generator(tmp_path / "Places_512_FullData_G.pth")


def photo_crop(top=150, left=200, height=90, width=150):
    """A crop of a bundled COCO photo with a rectangular hole, as uint8 arrays."""
    crop = np.ascontiguousarray(sample_photo()[top : top + height, left : left + width])
    mask = np.zeros((height, width), np.uint8)
    mask[20:70, 30:110] = 255
    return crop, mask


def loaded_mat(weights, **params) -> MAT:
    mat = MAT({"weights": str(weights), **params}, device="cpu")
    mat.load()
    return mat


def test_mat_builds_a_verified_dataset(tmp_path, tiny_mat):
    data = sample_recipe_data()
    data["masks"]["kinds"] = ["Stuff"]
    data["methods"] = {"mat": {"weights": str(tiny_mat), "device": "cpu"}}
    recipe = write_recipe(tmp_path, data)
    root = DatasetRoot(tmp_path / "root")
    assert run_cli("build", "--stage", "all", "--root", str(root.path), "--recipe", str(recipe), "--no-progress") == 0

    forgery_id = "MAT_Stuff_COCO_000000142238"
    real, forgery, hole = read_forgery(root, "val", "COCO_000000142238", forgery_id)
    assert forgery.shape == real.shape == (427, 640, 3)
    assert np.array_equal(forgery[~hole], real[~hole])
    assert np.mean(np.any(forgery[hole] != real[hole], axis=1)) > 0.9

    record = read_records(root.manifest_dir("inpaint/mat"))[forgery_id]
    assert record["checkpoint"]["md5"] == hashlib.md5(tiny_mat.read_bytes()).hexdigest()
    assert record["checkpoint"]["official"] is False
    assert record["working_size"] == [640, 640]
    assert record["noise_mode"] == "none"
    assert record["settings"]["truncation_psi"] == 1


def test_known_pixels_come_back_unchanged(tiny_mat):
    crop, mask = photo_crop()
    result = loaded_mat(tiny_mat).inpaint([InpaintRequest("x", crop, mask, seed=3)])[0]
    hole = mask == 255
    assert result.image.shape == (90, 150, 3)
    assert np.array_equal(result.image[~hole], crop[~hole])
    assert np.mean(np.any(result.image[hole] != crop[hole], axis=1)) > 0.9
    assert result.info["working_size"] == [192, 192]


def test_same_seed_same_image(tiny_mat):
    crop, mask = photo_crop()
    mat = loaded_mat(tiny_mat)
    first = mat.inpaint([InpaintRequest("x", crop, mask, seed=7)])[0].image
    again = mat.inpaint([InpaintRequest("x", crop, mask, seed=7)])[0].image
    other = mat.inpaint([InpaintRequest("x", crop, mask, seed=8)])[0].image
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_batch_equals_single_images(tiny_mat):
    crop, mask = photo_crop()
    second_crop, _ = photo_crop(top=250, left=300)
    requests = [InpaintRequest("a", crop, mask, seed=1), InpaintRequest("b", second_crop, mask, seed=2)]
    mat = loaded_mat(tiny_mat, batch_size=2)
    batched = mat.inpaint(requests)
    for together, request in zip(batched, requests):
        alone = mat.inpaint([request])[0]
        assert np.abs(together.image.astype(int) - alone.image.astype(int)).max() <= 1


def test_grey_mask_values_are_thresholded_and_recorded(tiny_mat):
    crop, mask = photo_crop()
    mask[0, 0] = 3
    mask[5, 5] = 200
    result = loaded_mat(tiny_mat).inpaint([InpaintRequest("x", crop, mask, seed=0)])[0]
    assert result.info["mask_values_thresholded"] == 2
    assert np.array_equal(result.image[0, 0], crop[0, 0])


def test_checkpoint_with_noise_inputs_loads(tmp_path, monkeypatch):
    monkeypatch.setattr(MAT, "config", TINY)
    weights = save_tiny_generator(tmp_path / "with-noise.pth", replace(TINY, use_noise=True))
    mat = loaded_mat(weights)
    crop, mask = photo_crop(height=64, width=64)
    native = mat.inpaint([InpaintRequest("x", crop, mask[:64, :64], seed=0)])[0]
    larger, larger_mask = photo_crop()
    padded = mat.inpaint([InpaintRequest("y", larger, larger_mask, seed=0)])[0]
    assert mat.checkpoint()["noise_inputs"] is True
    assert native.info["noise_mode"] == "const"
    assert padded.info["noise_mode"] == "random"


def test_state_dict_of_another_model_is_rejected(tmp_path, tiny_mat):
    state = torch.load(tiny_mat, weights_only=True)
    state.pop("mapping.w_avg")
    state["extra.weight"] = torch.zeros(1)
    damaged = tmp_path / "damaged.pth"
    torch.save(state, damaged)
    with pytest.raises(MethodError, match="is not a state dict of MAT's 64x64 generator"):
        loaded_mat(damaged)


def test_state_dict_of_other_model_gives_short_message(tmp_path, tiny_mat):
    expected_keys = len(torch.load(tiny_mat, weights_only=True))
    wrong = tmp_path / "wrong.pth"
    torch.save({f"encoder.layer{index}.weight": torch.zeros(2) for index in range(40)}, wrong)
    with pytest.raises(MethodError) as raised:
        loaded_mat(wrong)
    message = str(raised.value)
    assert f"mat: {wrong} is not a state dict of MAT's 64x64 generator" in message
    assert f"{expected_keys} missing keys (first 5: " in message
    assert "40 unexpected keys (first 5: encoder.layer0.weight; " in message
    assert "brgen weights fetch mat" in message
    assert len(message) < 1000


class NotAStateDict:
    pass


def test_pickled_objects_are_not_loaded(tmp_path, tiny_mat):
    path = tmp_path / "pickled.pth"
    torch.save({"model": NotAStateDict()}, path)
    with pytest.raises(MethodError, match="cannot load .* as a state dict"):
        loaded_mat(path)


def test_missing_weights_name_file_source_and_fetch_command():
    with pytest.raises(MissingWeightsError) as caught:
        MAT({}, device="cpu").check()
    message = str(caught.value)
    assert "weight file Places_512_FullData_G.pth not found" in message
    assert "https://github.com/Sanster/models/releases/download/add_mat/Places_512_FullData_G.pth" in message
    assert "brgen weights fetch mat" in message
    assert "BRGEN_MAT_WEIGHTS" in message


def test_float16_needs_cuda():
    with pytest.raises(MethodError, match="float16 needs a CUDA device"):
        MAT({"dtype": "float16"}, device="cpu")
