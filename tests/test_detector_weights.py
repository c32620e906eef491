"""Loading NFA-ViT's initial weights through the real code: MiT folders and files, Noiseprint++ files."""

import json
from argparse import Namespace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import SegformerForImageClassification, SegformerModel

from detector.config import encoder_config, mit_config
from detector.errors import DetectorError
from detector.checkpoint import load_model
from detector.noise_extractor import DnCNN, load_layers, read_noiseprint
from detector.pretrained import build_pretrained_model, load_state_file, read_mit
from detector_helpers import save_tiny_mit_folders, save_tiny_noiseprint

PUBLISHED_PARAMETERS = Path(__file__).parent / "data" / "nfa-vit" / "published_parameters.json"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    noise, image = save_tiny_mit_folders(folder)
    return noise, image, save_tiny_noiseprint(folder / "noiseprint++.th")


@pytest.fixture(scope="module")
def built(weights):
    noise, image, noiseprint = weights
    return build_pretrained_model(noise, image, noiseprint, image_size=64)


def test_noise_branch_averages_rgb_filters(weights, built):
    model, _ = built
    rgb = SegformerForImageClassification.from_pretrained(weights[0]).segformer.stages[0].patch_embeddings.proj.weight
    assert model.noise_branch.stages[0].patch_embeddings.proj.weight.shape == (8, 1, 7, 7)
    assert torch.allclose(model.noise_branch.stages[0].patch_embeddings.proj.weight, rgb.mean(dim=1, keepdim=True))


def test_image_branch_keeps_imagenet_weights(weights, built):
    model, _ = built
    reference = SegformerForImageClassification.from_pretrained(weights[1]).segformer
    assert torch.equal(model.image_branch.stages[3].blocks[1].attention.k_proj.weight, reference.stages[3].blocks[1].attention.k_proj.weight)
    assert torch.equal(model.image_branch.stages[0].patch_embeddings.proj.weight, reference.stages[0].patch_embeddings.proj.weight)


def test_extractor_takes_noiseprint_shape_and_weights(weights, built):
    model, sources = built
    stored = torch.load(weights[2], weights_only=True)["network"]
    assert (model.config.extractor_depth, model.config.extractor_features) == (3, 8)
    assert torch.equal(model.noise_extractor.layers[3].running_var, stored["3.running_var"])
    assert sources["noise_extractor"]["source"] == "noiseprint++"
    assert len(sources["noise_extractor"]["sha256"]) == 64


def test_sources_record_weight_hashes(built):
    _, sources = built
    assert sources["mit_b0"]["format"] == "transformers"
    assert list(sources["mit_b2"]["sha256"]) == ["model.safetensors"]


@pytest.mark.parametrize("wrap", [
    lambda layers: layers,  # BR-Gen's noiseprint.pth
    lambda layers: {"state_dict": {f"dncnn.{name}": value for name, value in layers.items()}, "epoch": 3},  # TruFor's checkpoint
    lambda layers: {f"noise_extractor.layers.{name}": value for name, value in layers.items()},
])
def test_noiseprint_containers(tmp_path, wrap):
    layers = DnCNN(depth=3, features=8).layers.state_dict()
    path = tmp_path / "weights.pth"
    torch.save(wrap(layers), path)
    found, _ = read_noiseprint(path)
    assert sorted(found) == sorted(layers)


def test_noiseprint_required(weights):
    with pytest.raises(DetectorError, match="--random-noise-extractor"):
        build_pretrained_model(weights[0], weights[1], None, image_size=64)


def test_random_extractor_recorded(weights):
    model, sources = build_pretrained_model(weights[0], weights[1], None, random_noise_extractor=True, image_size=64, extractor_depth=3, extractor_features=8)
    assert sources["noise_extractor"]["source"] == "random-init"
    assert model.noise_extractor.layers[0].weight.requires_grad is False


def test_noiseprint_with_uneven_widths_rejected(weights, tmp_path):
    layers = DnCNN(depth=3, features=8).layers.state_dict()
    layers["2.weight"] = torch.zeros(16, 8, 3, 3)
    path = tmp_path / "other.th"
    torch.save({"network": layers}, path)
    with pytest.raises(DetectorError, match="other.th does not fit"):
        build_pretrained_model(weights[0], weights[1], path, image_size=64)


def test_noiseprint_with_one_layer_rejected(tmp_path):
    path = tmp_path / "one.th"
    torch.save({"network": {"0.weight": torch.zeros(8, 3, 3, 3)}}, path)
    with pytest.raises(DetectorError, match="one.th contains 1 convolution"):
        read_noiseprint(path)


def test_missing_mit_folder_explains_download(tmp_path):
    with pytest.raises(DetectorError, match="hf download nvidia/mit-b0 --local-dir"):
        read_mit(tmp_path / "absent", "b0")


def test_folder_without_weights_rejected(tmp_path, weights):
    folder = tmp_path / "config-only"
    folder.mkdir()
    (folder / "config.json").write_text((weights[0] / "config.json").read_text())
    with pytest.raises(DetectorError, match="not a loadable transformers SegFormer folder"):
        read_mit(folder, "b0")


def test_original_mit_file_loads(tmp_path):
    # BR-Gen's MiT-b0 weights with original names, as zeros of the published shapes.
    rows = json.loads(PUBLISHED_PARAMETERS.read_text())
    prefix = "noise_backbone."
    state = {name[len(prefix):]: torch.zeros(shape) for name, shape, _ in rows if name.startswith(prefix)}
    path = tmp_path / "segformer_b0_backbone_weights.pth"
    torch.save(state, path)
    config, converted, source = read_mit(path, "b0")
    assert source["format"] == "original"
    result = SegformerModel(encoder_config(config, 1)).load_state_dict(converted, strict=True)
    assert result.missing_keys == []
    assert config.hidden_sizes == mit_config("b0").hidden_sizes


def test_imdlbenco_checkpoint_unwrapped(tmp_path):
    path = tmp_path / "checkpoint-199.pth"
    torch.save({"model": {"seg_decoder.gamma1": torch.ones(4)}, "epoch": 199}, path)
    assert list(load_state_file(path)) == ["seg_decoder.gamma1"]


def test_pickled_checkpoint_explained(tmp_path):
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": {}, "args": Namespace(lr=1.0)}, path)
    with pytest.raises(DetectorError, match="weights_only=False"):
        load_state_file(path)


def many_wrong_tensors(count: int = 300) -> dict[str, torch.Tensor]:
    return {f"decoder.block{index}.weight": torch.zeros(1) for index in range(count)}


def test_wrong_mit_file_gives_short_message(tmp_path, weights):
    path = tmp_path / "mit_b0.pth"
    torch.save(many_wrong_tensors(), path)
    # A weight file carries no config, so both branches get the full-size shapes, which line up.
    with pytest.raises(DetectorError) as raised:
        build_pretrained_model(path, path, weights[2], image_size=64)
    message = str(raised.value)
    assert f"noise branch (MiT-b0): {path} does not fit:" in message
    assert "300 unexpected keys (first 5: decoder.block0.weight; " in message
    assert len(message) < 1500


def test_wrong_noiseprint_layers_give_short_message(tmp_path):
    layers = {**DnCNN(depth=3, features=8).layers.state_dict(), **many_wrong_tensors()}
    with pytest.raises(DetectorError) as raised:
        load_layers(DnCNN(depth=3, features=8), layers, tmp_path / "noiseprint.pth")
    message = str(raised.value)
    assert "300 unexpected keys (first 5: " in message
    assert len(message) < 1000


def test_wrong_checkpoint_gives_short_message(tmp_path, built):
    model, _ = built
    folder = tmp_path / "epoch-0001"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(model.config.to_dict()))
    save_file(many_wrong_tensors(), folder / "model.safetensors")
    with pytest.raises(DetectorError) as raised:
        load_model(folder)
    message = str(raised.value)
    assert f"{len(model.state_dict())} missing keys (first 5: noise_extractor.layers.0.weight; " in message
    assert "300 unexpected keys" in message
    assert len(message) < 1500
