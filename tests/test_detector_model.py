"""NFA-ViT's architecture: parameter count, published names, the three attention forms, blocks and shapes."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import SegformerModel

from detector.attention import (
    attention_with_least_attended_mask,
    dense_attention,
    fixed_sparse_attention,
    fixed_sparse_mask,
    noise_guided_attention,
    project,
)
from detector.config import NFAViTConfig, encoder_config, mit_config, published_config
from detector.convert import mit_from_original, nfa_vit_from_published
from detector.errors import DetectorError
from detector.model import NFAViT
from detector_helpers import tiny_mit_config

PUBLISHED_PARAMETERS = Path(__file__).parent / "data" / "nfa-vit" / "published_parameters.json"


def mit_parameter_count(in_channels, hidden_sizes, depths, sr_ratios, patch_sizes, mlp_ratio=4):
    """Parameters of a MiT encoder, counted layer by layer from its shape."""
    total = 0
    previous = in_channels
    for channels, depth, ratio, patch in zip(hidden_sizes, depths, sr_ratios, patch_sizes):
        hidden = mlp_ratio * channels
        total += previous * channels * patch * patch + channels  # patch embedding convolution
        total += 2 * channels  # its LayerNorm
        block = 2 * channels  # pre-attention LayerNorm
        block += 4 * (channels * channels + channels)  # query, key, value, output projections
        if ratio > 1:
            block += channels * channels * ratio * ratio + channels + 2 * channels  # reduction conv and LayerNorm
        block += 2 * channels  # pre-MLP LayerNorm
        block += channels * hidden + hidden  # fc1
        block += hidden * 9 + hidden  # depthwise 3x3 convolution
        block += hidden * channels + channels  # fc2
        total += depth * block + 2 * channels  # blocks and the stage's LayerNorm
        previous = channels
    return total


def hand_counted_nfa_vit():
    shared = {"sr_ratios": [8, 4, 2, 1], "patch_sizes": [7, 3, 3, 3]}
    noise_branch = mit_parameter_count(1, [32, 64, 160, 256], [2, 2, 2, 2], **shared)
    image_branch = mit_parameter_count(3, [64, 128, 320, 512], [3, 4, 6, 3], **shared)
    # DnCNN: conv 3->64 with bias, 15 x (conv 64->64 without bias + batch norm), conv 64->1 with bias.
    extractor = (3 * 64 * 9 + 64) + 15 * (64 * 64 * 9 + 2 * 64) + (64 * 9 + 1)
    # Decoder: 1x1 conv per stage to 512, 4 x 512 stage weights, LayerNorm, 1x1 conv to 1.
    decoder = sum(channels * 512 + 512 for channels in (64, 128, 320, 512)) + 4 * 512 + 2 * 512 + (512 + 1)
    classifier = 512 + 1
    return noise_branch + image_branch + extractor + decoder + classifier


def meta_model(config=None):
    with torch.device("meta"):
        return NFAViT(config)


def test_full_size_parameter_count():
    model = meta_model()
    assert sum(parameter.numel() for parameter in model.parameters()) == hand_counted_nfa_vit() == 28_600_227


def test_parameter_count_matches_published_model():
    rows = json.loads(PUBLISHED_PARAMETERS.read_text())
    published = sum(torch.Size(shape).numel() for _, shape, kind in rows if kind == "parameter")
    model = meta_model()
    # The published decoder also defines gamma5 and gamma6 (512 values each), which its forward never reads.
    assert published == 28_601_251
    assert sum(parameter.numel() for parameter in model.parameters()) == published - 2 * 512


def test_published_names_map_onto_model():
    rows = json.loads(PUBLISHED_PARAMETERS.read_text())
    state = {name: torch.empty(shape, device="meta") for name, shape, _ in rows}
    converted = nfa_vit_from_published(state)
    model = meta_model()
    result = model.load_state_dict(converted, strict=True, assign=True)
    assert result.missing_keys == []
    assert result.unexpected_keys == []


def test_published_config_uses_tanh_gelu():
    config = published_config()
    values = torch.linspace(-3, 3, 7)
    activation = meta_model(config).image_branch.stages[0].blocks[0].mlp.activation_fn
    assert torch.allclose(activation(values), F.gelu(values, approximate="tanh"))
    assert config.noise_branch.hidden_act == "gelu_pytorch_tanh"


def test_trainable_parts():
    model = meta_model()
    trainable = {name.split(".")[0] for name, _ in model.trainable_parameters()}
    assert trainable == {"image_branch", "decoder", "classifier"}


def test_original_mit_kv_is_split():
    keys, values = torch.arange(8.0).view(4, 2), -torch.arange(8.0).view(4, 2)
    converted = mit_from_original({"block2.1.attn.kv.weight": torch.cat([keys, values]), "norm3.bias": torch.ones(2), "head.weight": torch.ones(1)})
    assert torch.equal(converted["stages.1.blocks.1.attention.k_proj.weight"], keys)
    assert torch.equal(converted["stages.1.blocks.1.attention.v_proj.weight"], values)
    assert torch.equal(converted["stages.2.layer_norm.bias"], torch.ones(2))
    assert len(converted) == 3


def test_unknown_mit_name_rejected():
    with pytest.raises(DetectorError, match="block1.0.attn.q.weight"):
        mit_from_original({"block1.0.attn.qq.weight": torch.ones(1)})


@pytest.fixture
def attention_layer():
    torch.manual_seed(0)
    config = tiny_mit_config([8, 16, 16, 32], [2, 2, 2, 2])
    config.num_attention_heads = [2, 2, 2, 2]
    encoder = SegformerModel(config).eval()
    return encoder.stages[0].blocks[0]  # reduction ratio 8


def test_dense_attention_equals_transformers(attention_layer):
    hidden = torch.randn(2, 32 * 32, 8)
    expected, _ = attention_layer.attention(hidden, 32, 32)
    assert torch.allclose(dense_attention(attention_layer.attention, hidden, 32, 32), expected, atol=1e-5)


def test_fixed_sparse_mask_by_hand():
    # 4x4 queries, reduction 2, so a 2x2 key grid: each key is its own (row mod 2, column mod 2) group.
    mask = fixed_sparse_mask(4, 4, 2, 2, ratio=2, groups=2)
    assert mask.shape == (16, 4)
    assert mask[0].tolist() == [True, False, False, False]  # query (0, 0) lies in key cell (0, 0)
    assert mask[2].tolist() == [False, True, False, False]  # query (0, 2) lies in key cell (0, 1)
    assert mask[13].tolist() == [False, False, True, False]  # query (3, 1) lies in key cell (1, 0)
    assert mask.sum(dim=1).tolist() == [1] * 16


def test_fixed_sparse_mask_groups_repeat():
    # 8x8 keys, no reduction: query (1, 2) attends to the keys whose row is odd and column even.
    mask = fixed_sparse_mask(8, 8, 8, 8, ratio=1, groups=2).view(8, 8, 8, 8)
    allowed = torch.nonzero(mask[1, 2]).tolist()
    assert allowed == [[row, column] for row in (1, 3, 5, 7) for column in (0, 2, 4, 6)]


def test_grouped_sparse_attention_equals_masked(attention_layer):
    hidden = torch.randn(2, 32 * 32, 8)
    grouped = fixed_sparse_attention(attention_layer.attention, hidden, 32, 32, groups=2)

    query, key, value, key_height, key_width = project(attention_layer.attention, hidden, 32, 32)
    mask = fixed_sparse_mask(32, 32, key_height, key_width, 8, 2)
    scores = (query @ key.transpose(-2, -1)) * attention_layer.attention.scaling
    weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
    expected = attention_layer.attention.o_proj((weights @ value).transpose(1, 2).reshape(2, 32 * 32, 8))
    assert torch.allclose(grouped, expected, atol=1e-5)


def test_masked_sparse_path_for_uneven_grid(attention_layer):
    # 24x24 queries with reduction 8 give a 3x3 key grid, which does not split into 2x2 groups evenly.
    hidden = torch.randn(1, 24 * 24, 8)
    output = fixed_sparse_attention(attention_layer.attention, hidden, 24, 24, groups=2)
    assert output.shape == (1, 24 * 24, 8)
    assert torch.isfinite(output).all()


def test_least_attended_mask(attention_layer):
    hidden = torch.randn(2, 32 * 32, 8)
    output, mask = attention_with_least_attended_mask(attention_layer.attention, hidden, 32, 32, topk_ratio=0.25)
    expected, _ = attention_layer.attention(hidden, 32, 32)
    query, key, _, _, _ = project(attention_layer.attention, hidden, 32, 32)
    probabilities = ((query @ key.transpose(-2, -1)) * attention_layer.attention.scaling).softmax(dim=-1)
    assert torch.allclose(output, expected, atol=1e-5)
    assert mask.shape == (2, 2, 1024, 16)
    assert mask.sum(dim=-1).unique().tolist() == [4]  # k = 0.25 * 16 keys
    # Every masked key is attended less than every unmasked key of the same query.
    assert torch.all(probabilities.masked_fill(~mask, -1).amax(-1) <= probabilities.masked_fill(mask, 2).amin(-1))


def test_noise_guided_attention_sees_only_masked_keys(attention_layer):
    hidden = torch.randn(1, 32 * 32, 8)
    _, _, value, _, _ = project(attention_layer.attention, hidden, 32, 32)
    mask = torch.zeros(1, 2, 1024, 16, dtype=torch.bool)
    mask[..., 5] = True
    output = noise_guided_attention(attention_layer.attention, hidden, 32, 32, mask)
    only_key_5 = attention_layer.attention.o_proj(value[:, :, 5:6].expand(1, 2, 1024, 4).transpose(1, 2).reshape(1, 1024, 8))
    assert torch.allclose(output, only_key_5, atol=1e-5)


def tiny_config(**options):
    return NFAViTConfig(
        noise_branch=encoder_config(tiny_mit_config([8, 8, 16, 16], [1, 1, 1, 1]), 1),
        image_branch=encoder_config(tiny_mit_config([8, 16, 16, 32], [2, 2, 2, 2]), 3),
        extractor_depth=3, extractor_features=8, decoder_dim=16, image_size=64, **options,
    )


def test_standard_block_equals_transformers():
    torch.manual_seed(0)
    model = NFAViT(tiny_config(noise_block="standard")).eval()
    block = model.noise_branch.stages[1].blocks[0]
    hidden = torch.randn(1, 8 * 8, 8)
    output = model._run_block(block, hidden, 8, 8, lambda states: dense_attention(block.attention, states, 8, 8))
    assert torch.allclose(output, block(hidden, 8, 8), atol=1e-5)


def test_published_block_doubles_attention():
    torch.manual_seed(0)
    model = NFAViT(tiny_config()).eval()
    block = model.noise_branch.stages[1].blocks[0]
    hidden = torch.randn(1, 8 * 8, 8)
    attended = dense_attention(block.attention, hidden, 8, 8)
    output = model._run_block(block, hidden, 8, 8, lambda states: dense_attention(block.attention, states, 8, 8), published=True)
    expected = 2 * attended + block.mlp(block.layernorm_after(2 * attended), 8, 8)
    assert torch.allclose(output, expected, atol=1e-5)


def test_forward_shapes_and_frozen_extractor():
    torch.manual_seed(0)
    model = NFAViT(tiny_config())
    model.train()
    output = model(torch.randn(2, 3, 64, 64))
    assert output.segmentation.shape == (2, 1, 64, 64)
    assert output.classification.shape == (2,)
    assert model.noise_extractor.training is False
    assert model.image_branch.training is True


def test_noise_masks_fit_image_branch():
    torch.manual_seed(0)
    model = NFAViT(tiny_config()).eval()
    masks = model.noise_masks(torch.randn(1, 1, 64, 64))
    # Queries per stage: 16x16, 8x8, 4x4, 2x2; keys after reduction 8, 4, 2, 1: 2x2 each; heads 1, 1, 2, 2.
    assert [tuple(mask.shape) for mask in masks] == [(1, 1, 256, 4), (1, 1, 64, 4), (1, 2, 16, 4), (1, 2, 4, 4)]
    assert [int(mask[0, 0, 0].sum()) for mask in masks] == [1, 1, 1, 1]


def test_image_size_checked():
    model = NFAViT(tiny_config())
    with pytest.raises(DetectorError, match="multiple of 32 and at least 64"):
        model(torch.randn(1, 3, 80, 80))


def test_branches_must_line_up():
    image = mit_config("b2")
    image.sr_ratios = [8, 4, 2, 2]
    with pytest.raises(DetectorError, match="sr_ratios"):
        NFAViTConfig(image_branch=image)


def test_config_round_trip():
    config = tiny_config(noise_block="standard")
    rebuilt = NFAViTConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert rebuilt.to_dict() == config.to_dict()


def test_loss_weights_classification_by_half():
    from detector.model import NFAViTOutput, nfa_vit_loss

    output = NFAViTOutput(torch.zeros(1, 1, 2, 2), torch.zeros(1))
    loss = nfa_vit_loss(output, torch.ones(1, 1, 2, 2), torch.ones(1))
    assert loss.segmentation.item() == pytest.approx(F.softplus(torch.tensor(0.0)).item())
    assert loss.total.item() == pytest.approx(1.5 * 0.6931471805599453)
