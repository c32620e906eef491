"""SDXL, BrushNet and PowerPaint through their real loading and inference code, on tiny random weights."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

import tiny_diffusion
from brgen_build.files import read_png
from brgen_build.layout import DatasetRoot
from brgen_build.manifest import read_records
from brgen_build.seeding import derive_seed
from conftest import sample_recipe_data, write_recipe
from inpainters import registry
from inpainters.base import InpaintRequest, MethodError
from inpainters.prompts import ClassTable
from manifests import data_path
from test_pipeline import run_cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = {"steps": 2, "working_size": 64, "resize": "area", "device": "cpu", "negative_prompt": "blurry"}
TOKENS = {"sdxl": "SDXL", "brushnet": "BrushNet", "powerpaint": "PowerPaint"}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Tiny weight folders in the official layouts, and the method parameters that point at them."""
    folder = tmp_path_factory.mktemp("weights")
    tiny_diffusion.write_sd15(folder / "realisticVisionV60B1_v51VAE")
    tiny_diffusion.write_sdxl_base(folder / "stable-diffusion-xl-base-1.0")
    return {
        "sdxl": {"weights": str(tiny_diffusion.write_sdxl_inpainting(folder / "stable-diffusion-xl-1.0-inpainting-0.1"))},
        "brushnet": {
            "weights": str(tiny_diffusion.write_brushnet(folder / "segmentation_mask_brushnet_ckpt", folder / "realisticVisionV60B1_v51VAE")),
            "base": str(folder / "realisticVisionV60B1_v51VAE"),
        },
        "brushnet-sdxl": {
            "weights": str(tiny_diffusion.write_brushnet(folder / "segmentation_mask_brushnet_ckpt_sdxl_v1", folder / "stable-diffusion-xl-base-1.0")),
            "base": str(folder / "stable-diffusion-xl-base-1.0"),
            "variant": "sdxl",
        },
        "powerpaint": {"weights": str(tiny_diffusion.write_powerpaint(folder / "PowerPaint_v2"))},
    }


@pytest.fixture(scope="module", params=["sdxl", "brushnet", "powerpaint"])
def built(request, weights, tmp_path_factory):
    """The bundled sample built end to end (reals, masks, one method, verify) with plain templates."""
    method = request.param
    folder = tmp_path_factory.mktemp(method)
    data = sample_recipe_data()
    prompts = {"prompt": {"Stuff": "a photo of {classes}", "Background": "a {object} outside"}, "perturbation": 0.0}
    data["methods"] = {method: {**weights[method], **FAST, **prompts, "batch_size": 2}}
    recipe = write_recipe(folder, data, f"{method}.yaml")
    assert run_cli("build", "--stage", "all", "--root", str(folder / "root"), "--recipe", str(recipe), "--no-progress") == 0
    return method, DatasetRoot(folder / "root")


def make_inpainter(weights, key, **params):
    method = "brushnet" if key == "brushnet-sdxl" else key
    inpainter = registry.get(method)({**weights[key], **FAST, **params})
    inpainter.check()
    inpainter.load()
    return inpainter


def photo_request(name="item", seed=5, size=(40, 56), offset=0):
    rng = np.random.default_rng(seed)
    mask = np.zeros(size, np.uint8)
    mask[8:30, 10 + offset : 40] = 255
    region = {"kind": "Stuff", "classes": [{"id": 193, "name": "grass-merged", "pixels": 600}], "bbox": [10, 8, 30, 22]}
    return InpaintRequest(name, rng.integers(0, 256, (*size, 3), dtype=np.uint8), mask, seed, region)


def test_build_makes_verified_forgeries(built):
    method, root = built
    forgery_id = f"{TOKENS[method]}_Stuff_COCO_000000142238"
    real = read_png(root.au("val", "COCO_000000142238"))
    forgery = read_png(root.tp("val", forgery_id))
    hole = read_png(root.gt("val", forgery_id)) == 255
    assert forgery.shape == real.shape == (427, 640, 3)
    assert np.array_equal(forgery[~hole], real[~hole])
    assert np.mean(np.any(forgery[hole] != real[hole], axis=1)) > 0.5

    records = read_records(root.manifest_dir(f"inpaint/{method}"))
    assert len(records) == 4
    record = records[forgery_id]
    assert record["seed"] == derive_seed(0, method, forgery_id)
    assert record["negative_prompt"] == "blurry"
    assert record["perturbation"] is None
    assert record["prompt_source"] == "template"
    assert record["working_size"] == [80, 56]
    assert record["settings"]["steps"] == 2
    assert record["batch_size"] == 2


def test_recorded_prompts_name_the_mask_classes(built):
    method, root = built
    masks = read_records(root.manifest_dir("masks"))
    table = ClassTable.from_file(data_path("prompts", "related_classes.yaml"))
    for record in read_records(root.manifest_dir(f"inpaint/{method}")).values():
        phrases = [table.phrase(entry["name"]) for entry in masks[f"{record['kind']}_{record['real']}"]["classes"]]
        if record["kind"] == "Stuff":
            assert record["prompt"] == "a photo of " + (phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1])
        else:
            assert record["prompt"] == f"a {phrases[0]} outside"


def test_checkpoint_records_weight_hashes(built, weights):
    method, root = built
    record = next(iter(read_records(root.manifest_dir(f"inpaint/{method}")).values()))
    files = record["checkpoint"]["files"]
    role, name = {"sdxl": ("pipeline", "unet/diffusion_pytorch_model.safetensors"),
                  "brushnet": ("brushnet", "diffusion_pytorch_model.safetensors"),
                  "powerpaint": ("powerpaint", "pytorch_model.bin")}[method]
    with open(f"{record['checkpoint']['folders'][role]}/{name}", "rb") as handle:
        assert files[f"{role}/{name}"]["sha256"] == hashlib.sha256(handle.read()).hexdigest()
    folder = weights[method]["weights"] + ("/PowerPaint_Brushnet" if method == "powerpaint" else "")
    assert record["checkpoint"]["folders"][role] == folder


def test_sdxl_has_no_watermark(weights):
    inpainter = make_inpainter(weights, "sdxl")
    assert inpainter.pipeline.watermark is None


@pytest.mark.parametrize("key", ["sdxl", "brushnet", "brushnet-sdxl", "powerpaint"])
def test_inpainter_is_seeded_and_batch_independent(weights, key):
    inpainter = make_inpainter(weights, key)
    requests = [photo_request("a", seed=1), photo_request("b", seed=2, size=(42, 56), offset=4)]
    batched = inpainter.inpaint(requests)
    alone = [inpainter.inpaint([request])[0] for request in requests]
    again = inpainter.inpaint([requests[0]])[0]
    for request, together, single in zip(requests, batched, alone):
        assert together.image.shape == request.image.shape
        assert np.abs(together.image.astype(int) - single.image.astype(int)).max() <= 2
        assert together.info == single.info
    assert np.array_equal(again.image, alone[0].image)
    assert not np.array_equal(alone[0].image[:40], alone[1].image[:40])


def test_task_tokens_are_added_tokens(weights):
    from inpainters.powerpaint import expand_task_tokens

    inpainter = make_inpainter(weights, "powerpaint")
    tokenizer = inpainter.pipeline.tokenizer
    ids = tokenizer(expand_task_tokens("P_obj")).input_ids[1:-1]
    first = len(tokenizer) - 30
    assert ids == list(range(first + 20, first + 30))
    encoder_rows = inpainter.pipeline.text_encoder.get_input_embeddings().weight.shape[0]
    assert encoder_rows == len(tokenizer)


def test_powerpaint_text_encoder_mismatch_is_counted(weights, tmp_path):
    from inpainters.powerpaint import load_task_text_encoder

    folder = Path(weights["powerpaint"]["weights"])
    state = torch.load(folder / "PowerPaint_Brushnet" / "pytorch_model.bin", weights_only=True)
    state.update({f"unet.block{index}.weight": torch.zeros(1) for index in range(300)})
    checkpoint = tmp_path / "pytorch_model.bin"
    torch.save(state, checkpoint)
    with pytest.raises(MethodError) as raised:
        load_task_text_encoder(folder / "realisticVisionV60B1_v51VAE", checkpoint)
    message = str(raised.value)
    assert f"powerpaint: {checkpoint} does not fit the CLIP text encoder" in message
    assert "300 unexpected keys (first 5: unet.block0.weight; " in message
    assert len(message) < 1000


def test_powerpaint_records_task_prompts(weights):
    inpainter = make_inpainter(weights, "powerpaint", task="object-removal", prompt="a photo of {classes}", perturbation=0.0)
    info = inpainter.inpaint([photo_request()])[0].info
    assert info["task"] == "object-removal"
    assert info["prompt"] == "a photo of grass"
    assert info["unet_prompt"] == "a photo of grass empty scene blur"
    assert info["brushnet_prompts"] == {"promptA": "P_ctxt", "promptB": "P_ctxt", "negative_promptA": "P_obj", "negative_promptB": "P_obj"}


def test_fitting_degree_blends_shape_prompts(weights):
    pipeline = make_inpainter(weights, "powerpaint").pipeline
    with torch.inference_mode():
        blend = pipeline.blend("P_shape", "P_ctxt", 0.25)
        expected = 0.25 * pipeline.embed("P_shape") + 0.75 * pipeline.embed("P_ctxt")
    assert np.allclose(blend.numpy(), expected.numpy(), atol=1e-6)


def test_missing_weights_fail_before_work(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("BRGEN_BRUSHNET_WEIGHTS", raising=False)
    monkeypatch.setenv("BRGEN_WEIGHTS_DIR", str(tmp_path / "weights"))
    data = sample_recipe_data()
    data["methods"] = {"brushnet": {}}
    recipe = write_recipe(tmp_path, data)
    root = tmp_path / "root"
    assert run_cli("build", "--stage", "reals", "--root", str(root), "--recipe", str(recipe), "--no-progress") == 0
    assert run_cli("build", "--stage", "masks", "--root", str(root), "--no-progress") == 0
    assert run_cli("inpaint", "--method", "brushnet", "--root", str(root), "--no-progress") == 2
    error = capsys.readouterr().err
    assert f"not found at {tmp_path}/weights/hub/Sanster/brushnet_segmentation_mask" in error
    assert "`brgen weights fetch brushnet`" in error
    assert "BRGEN_BRUSHNET_WEIGHTS" in error
    assert not (root / "manifests" / "inpaint").exists()


def test_incomplete_weight_folder_names_missing_file(tmp_path, weights):
    folder = tmp_path / "PowerPaint_v2"
    (folder / "PowerPaint_Brushnet").mkdir(parents=True)
    (folder / "PowerPaint_Brushnet" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    inpainter = registry.get("powerpaint")({"weights": str(folder), **FAST})
    with pytest.raises(MethodError, match="weight file pytorch_model.bin not found at .*PowerPaint_Brushnet"):
        inpainter.check()


def test_powerpaint_base_defaults_to_inner_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("BRGEN_POWERPAINT_BASE", raising=False)
    checkpoint = tmp_path / "PowerPaint_v2" / "PowerPaint_Brushnet"
    checkpoint.mkdir(parents=True)
    for name in ("diffusion_pytorch_model.safetensors", "pytorch_model.bin"):
        (checkpoint / name).write_bytes(b"")
    inpainter = registry.get("powerpaint")({"weights": str(tmp_path / "PowerPaint_v2"), **FAST})
    with pytest.raises(MethodError, match=r"not found at .*PowerPaint_v2/realisticVisionV60B1_v51VAE \(from the `weights` parameter\)"):
        inpainter.check()


def test_brushnet_on_wrong_base_is_rejected(weights):
    params = {**weights["brushnet"], "base": weights["brushnet-sdxl"]["base"], "variant": "sdxl"}
    inpainter = registry.get("brushnet")({**params, **FAST})
    inpainter.check()
    with pytest.raises(MethodError, match="does not match its config|does not fit the base model"):
        inpainter.load()


@pytest.mark.parametrize(
    "working_size, resize, expected",
    [(1024, "area", (840, 1256)), (512, "short_side", (512, 768)), (640, "long_side", (424, 640)), ([1024, 768], "area", (768, 1024))],
)
def test_working_size(working_size, resize, expected):
    inpainter = registry.get("sdxl")({"working_size": working_size, "resize": resize})
    assert inpainter.working_size(427, 640) == expected
    assert inpainter.batch_key(428, 640) == inpainter.working_size(428, 640)


@pytest.mark.parametrize(
    "method, params, message",
    [
        ("sdxl", {"scheduler": "fast"}, "`scheduler` must be one of ddim"),
        ("sdxl", {"dtype": "half"}, "`dtype` must be auto or one of float32"),
        ("sdxl", {"working_size": [100, 64]}, "sides that are multiples of 8"),
        ("sdxl", {"strength": 0}, "`strength` must be a number in"),
        ("brushnet", {"variant": "sd2"}, "`variant` must be one of sd15, sdxl"),
        ("powerpaint", {"task": "outpainting"}, "`task` must be one of text-guided"),
        ("powerpaint", {"fitting_degree": 2}, "`fitting_degree` must be a number in 0..1"),
    ],
)
def test_invalid_parameters(method, params, message):
    with pytest.raises(MethodError, match=message):
        registry.get(method)(params)


def test_recipe_resolves_weight_folder_paths(tmp_path):
    from brgen_build.recipe import load_recipe

    data = sample_recipe_data()
    data["methods"] = {"brushnet": {"weights": "weights/ckpt", "base": "weights/base", "captioner": "weights/vlm"}}
    params = load_recipe(write_recipe(tmp_path, data)).method_params("brushnet")
    assert params["base"] == str((tmp_path / "weights" / "base").resolve())
    assert params["captioner"] == str((tmp_path / "weights" / "vlm").resolve())
