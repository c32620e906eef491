"""brgen's BrushNet against the official checkpoints' parameter names and the official code's outputs."""

import json
import zlib
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModel

from inpainters.base import MethodError
from inpainters.brushnet_model import BrushNetModel, load_brushnet, unet_forward
from inpainters.powerpaint import convert_text_encoder_state

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PARAMETERS = Path(__file__).parent / "data" / "brushnet-parameters"
REFERENCE = Path(__file__).parent / "data" / "brushnet-reference"


def read_listing(name: str) -> dict:
    return {key: tuple(shape) for key, shape in json.loads((PARAMETERS / f"{name}.json").read_text()).items()}


def meta_listing(config_name: str) -> dict:
    with torch.device("meta"):
        model = BrushNetModel.from_config(json.loads((PARAMETERS / f"config_{config_name}.json").read_text()))
    return {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}


@pytest.mark.parametrize("name", ["brushnet_sd15", "brushnet_sdxl", "powerpaint_brushnet"])
def test_full_size_parameters_match_official(name):
    official = read_listing(name)
    mine = meta_listing(name)
    assert sorted(set(official) - set(mine)) == []
    assert sorted(set(mine) - set(official)) == []
    assert {key: shape for key, shape in mine.items() if official[key] != shape} == {}


def test_listings_have_official_key_counts():
    # The real checkpoint files have these counts of BrushNet output convolution keys (down / mid / up).
    counts = {}
    for name in ("brushnet_sd15", "brushnet_sdxl", "powerpaint_brushnet"):
        keys = read_listing(name)
        counts[name] = tuple(sum(1 for key in keys if key.startswith(prefix)) for prefix in ("brushnet_down_blocks.", "brushnet_mid_block.", "brushnet_up_blocks."))
    assert counts == {"brushnet_sd15": (24, 2, 30), "brushnet_sdxl": (18, 2, 22), "powerpaint_brushnet": (24, 2, 30)}
    assert len(read_listing("brushnet_sd15")) == 322


def test_powerpaint_text_encoder_state_converts():
    # The official pytorch_model.bin layout, as meta tensors, against SD 1.5's text encoder with 30 added tokens.
    official = {key: torch.empty(shape, device="meta") for key, shape in read_listing("powerpaint_text_encoder").items()}
    config = CLIPTextConfig(vocab_size=49408 + 30, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                            max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)
    with torch.device("meta"):
        encoder = CLIPTextModel(config)
    expected = {key: tuple(tensor.shape) for key, tensor in encoder.state_dict().items()}
    prefix = "text_model." if any(key.startswith("text_model.") for key in expected) else ""
    converted = {key: tuple(tensor.shape) for key, tensor in convert_text_encoder_state(official, 49408, Path("pytorch_model.bin"), prefix).items()}
    assert sorted(set(expected) ^ set(converted)) == []
    assert {key: shape for key, shape in converted.items() if expected[key] != shape} == {}


def test_text_encoder_without_task_tokens_is_rejected():
    state = {"text_model.embeddings.token_embedding.wrapped.weight": torch.zeros(5, 4)}
    with pytest.raises(MethodError, match="lacks the task token vectors P_ctxt, P_shape, P_obj"):
        convert_text_encoder_state(state, 5, Path("model.bin"))


def fill_parameters(model: torch.nn.Module) -> None:
    """The same fill as tests/data/brushnet-reference/generate.py: N(0, 0.05^2) seeded by the crc32 of each name."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)


@pytest.mark.parametrize("case", ["brushnet", "brushnet_xl", "powerpaint"])
def test_outputs_match_official_code(case):
    configs = json.loads((REFERENCE / "configs.json").read_text())[case]
    reference = load_file(REFERENCE / "outputs.safetensors")
    unet = UNet2DConditionModel.from_config(configs["unet"]).eval()
    brushnet = BrushNetModel.from_config(configs["brushnet"]).eval()
    fill_parameters(unet)
    fill_parameters(brushnet)
    added = None
    if case == "brushnet_xl":
        added = {"text_embeds": reference[f"{case}.text_embeds"], "time_ids": reference[f"{case}.time_ids"]}
    sample, context, timestep = reference[f"{case}.sample"], reference[f"{case}.context"], torch.tensor(500)

    with torch.inference_mode():
        down, mid, up = brushnet(sample, timestep, context, reference[f"{case}.condition"], 0.7, added)
        noise = unet_forward(unet, sample, timestep, context, (down, mid, up), added)

    assert len(down) == sum(1 for key in reference if key.startswith(f"{case}.down."))
    assert len(up) == sum(1 for key in reference if key.startswith(f"{case}.up."))
    for index, tensor in enumerate(down):
        assert torch.allclose(tensor, reference[f"{case}.down.{index}"], atol=1e-6), f"down addition {index}"
    assert torch.allclose(mid, reference[f"{case}.mid"], atol=1e-6)
    for index, tensor in enumerate(up):
        assert torch.allclose(tensor, reference[f"{case}.up.{index}"], atol=1e-6), f"up addition {index}"
    assert torch.allclose(noise, reference[f"{case}.noise"], atol=1e-6)


def test_unet_forward_without_additions_matches_diffusers():
    configs = json.loads((REFERENCE / "configs.json").read_text())["brushnet"]
    reference = load_file(REFERENCE / "outputs.safetensors")
    unet = UNet2DConditionModel.from_config(configs["unet"]).eval()
    fill_parameters(unet)
    down = [torch.zeros_like(reference[f"brushnet.down.{i}"]) for i in range(4)]
    up = [torch.zeros_like(reference[f"brushnet.up.{i}"]) for i in range(5)]
    sample, context = reference["brushnet.sample"], reference["brushnet.context"]
    with torch.inference_mode():
        mine = unet_forward(unet, sample, torch.tensor(500), context, (down, torch.zeros_like(reference["brushnet.mid"]), up))
        theirs = unet(sample, torch.tensor(500), context).sample
    assert torch.equal(mine, theirs)


def test_checkpoint_of_another_config_is_rejected(tmp_path):
    configs = json.loads((REFERENCE / "configs.json").read_text())
    BrushNetModel.from_config(configs["brushnet"]["brushnet"]).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["block_out_channels"] = [16, 16]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(MethodError) as raised:
        load_brushnet(tmp_path, torch.float32)
    message = str(raised.value)
    assert "does not match its config: " in message
    assert "missing key" not in message
    assert "tensors of another shape (first 5: " in message


def test_checkpoint_loads_with_its_values(tmp_path):
    configs = json.loads((REFERENCE / "configs.json").read_text())
    original = BrushNetModel.from_config(configs["brushnet_xl"]["brushnet"])
    fill_parameters(original)
    original.save_pretrained(tmp_path)
    loaded = load_brushnet(tmp_path, torch.float16)
    assert loaded.conv_in_condition.weight.dtype == torch.float16
    assert torch.equal(loaded.add_embedding.linear_1.weight, original.add_embedding.linear_1.weight.half())
