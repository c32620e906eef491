"""Parameter-name conversion from original MiT and published NFA-ViT checkpoints to brgen's names.

The original SegFormer code (NVlabs) and the published NFA-ViT code (clpbc/BR-Gen) name the MiT encoder's
weights `patch_embed1.proj`, `block1.0.attn.q`, `norm1`, and keep keys and values in one `kv` layer.
transformers, whose modules brgen's NFA-ViT uses, names them `stages.0.patch_embeddings.proj`,
`stages.0.blocks.0.attention.q_proj`, `stages.0.layer_norm`, with separate `k_proj` and `v_proj`.
"""

from __future__ import annotations

import re

import torch

from detector.errors import DetectorError

_PATCH_EMBED = re.compile(r"patch_embed(?P<stage>\d)\.(?P<module>proj|norm)\.(?P<parameter>weight|bias)")
_BLOCK = re.compile(r"block(?P<stage>\d)\.(?P<block>\d+)\.(?P<module>.+)\.(?P<parameter>weight|bias)")
_STAGE_NORM = re.compile(r"norm(?P<stage>\d)\.(?P<parameter>weight|bias)")
# The ImageNet classification head of the original MiT checkpoints, which NFA-ViT does not use.
_IMAGENET_HEAD = re.compile(r"head\.(weight|bias)")

_PATCH_EMBED_MODULES = {"proj": "proj", "norm": "layer_norm"}
_BLOCK_MODULES = {
    "norm1": "layernorm_before",
    "attn.q": "attention.q_proj",
    "attn.sr": "attention.sequence_reduction.sequence_reduction",
    "attn.norm": "attention.sequence_reduction.layer_norm",
    "attn.proj": "attention.o_proj",
    "norm2": "layernorm_after",
    "mlp.fc1": "mlp.fc1",
    "mlp.dwconv.dwconv": "mlp.dwconv.dwconv",
    "mlp.fc2": "mlp.fc2",
}

_EXTRACTOR = "noise_extractor.layers."
_BRANCHES = {"noise_backbone.": "noise_branch.", "image_backbone.": "image_branch."}
_DECODER_PROJECTION = re.compile(r"seg_decoder\.conv_layer(?P<stage>\d)\.(?P<parameter>weight|bias)")
_DECODER_GAMMA = re.compile(r"seg_decoder\.gamma(?P<stage>\d)")
# The published decoder defines gamma5 and gamma6, but its forward pass reads only gamma1 to gamma4.
_UNUSED_GAMMAS = {5, 6}
_DECODER_RENAMES = {
    "seg_decoder.norm.weight": "decoder.norm.weight",
    "seg_decoder.norm.bias": "decoder.norm.bias",
    "seg_decoder.conv_last.weight": "decoder.head.weight",
    "seg_decoder.conv_last.bias": "decoder.head.bias",
    "cls_decoder.2.weight": "classifier.weight",
    "cls_decoder.2.bias": "classifier.bias",
}


def is_original_mit(state: dict[str, torch.Tensor]) -> bool:
    return "patch_embed1.proj.weight" in state


def mit_from_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an original MiT state dict (NVlabs `mit_b*.pth`, BR-Gen's `segformer_b*_backbone_weights.pth`).

    The ImageNet classification head (`head.*`) is dropped.

    Raises:
        DetectorError: a key is not a MiT encoder parameter.
    """
    converted: dict[str, torch.Tensor] = {}
    unknown = []
    for name, value in state.items():
        if _IMAGENET_HEAD.fullmatch(name):
            continue
        if not _convert_mit_parameter(name, value, converted):
            unknown.append(name)
    if unknown:
        raise DetectorError(
            f"{len(unknown)} unknown MiT parameter(s), first {', '.join(sorted(unknown)[:3])}; "
            "expected original SegFormer names such as block1.0.attn.q.weight"
        )
    return converted


def _convert_mit_parameter(name: str, value: torch.Tensor, converted: dict[str, torch.Tensor]) -> bool:
    match = _PATCH_EMBED.fullmatch(name)
    if match:
        module = _PATCH_EMBED_MODULES[match["module"]]
        converted[f"stages.{int(match['stage']) - 1}.patch_embeddings.{module}.{match['parameter']}"] = value
        return True

    match = _STAGE_NORM.fullmatch(name)
    if match:
        converted[f"stages.{int(match['stage']) - 1}.layer_norm.{match['parameter']}"] = value
        return True

    match = _BLOCK.fullmatch(name)
    if not match:
        return False
    prefix = f"stages.{int(match['stage']) - 1}.blocks.{match['block']}"
    if match["module"] == "attn.kv":
        # The kv layer's output channels are the keys' channels followed by the values' channels.
        keys, values = value.chunk(2, dim=0)
        converted[f"{prefix}.attention.k_proj.{match['parameter']}"] = keys
        converted[f"{prefix}.attention.v_proj.{match['parameter']}"] = values
        return True
    module = _BLOCK_MODULES.get(match["module"])
    if module is None:
        return False
    converted[f"{prefix}.{module}.{match['parameter']}"] = value
    return True


def nfa_vit_from_published(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a published NFA-ViT state dict (the `model` entry of an IMDLBenCo checkpoint) to brgen's names.

    The decoder's separate per-stage weight vectors `gamma1`..`gamma4` become rows of one
    `decoder.stage_weights` matrix. `gamma5` and `gamma6`, which the published forward pass never reads,
    are dropped.

    Raises:
        DetectorError: a key belongs to no part of NFA-ViT.
    """
    state = {name.removeprefix("module."): value for name, value in state.items()}
    converted: dict[str, torch.Tensor] = {}
    branches: dict[str, dict[str, torch.Tensor]] = {prefix: {} for prefix in _BRANCHES}
    gammas: dict[int, torch.Tensor] = {}
    unknown = []

    for name, value in state.items():
        branch = next((prefix for prefix in _BRANCHES if name.startswith(prefix)), None)
        if branch is not None:
            branches[branch][name[len(branch):]] = value
        elif name.startswith(_EXTRACTOR):
            converted[name] = value
        elif name in _DECODER_RENAMES:
            converted[_DECODER_RENAMES[name]] = value
        elif match := _DECODER_PROJECTION.fullmatch(name):
            converted[f"decoder.projections.{int(match['stage']) - 1}.{match['parameter']}"] = value
        elif match := _DECODER_GAMMA.fullmatch(name):
            gammas[int(match["stage"])] = value
        else:
            unknown.append(name)
    if unknown:
        raise DetectorError(
            f"{len(unknown)} parameter(s) of no NFA-ViT part, first {', '.join(sorted(unknown)[:3])}; "
            "expected a checkpoint of the published NFA_ViT model"
        )

    for prefix, target in _BRANCHES.items():
        for name, value in mit_from_original(branches[prefix]).items():
            converted[target + name] = value
    used = sorted(stage for stage in gammas if stage not in _UNUSED_GAMMAS)
    if used:
        converted["decoder.stage_weights"] = torch.stack([gammas[stage] for stage in used])
    return converted
