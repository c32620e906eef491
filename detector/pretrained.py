"""Building NFA-ViT from its initial weights: ImageNet MiT-b0 and MiT-b2, and Noiseprint++.

A MiT source is either a local transformers folder (`nvidia/mit-b0`, `nvidia/mit-b2`: config.json and the
weights), loaded with `from_pretrained(local_files_only=True)`, or an original SegFormer weight file
(NVlabs `mit_b0.pth`, BR-Gen's `segformer_b0_backbone_weights.pth`), whose names are converted. Nothing is
downloaded. The noise branch reads the 1-channel noise map, so its first patch embedding is the average of
the RGB filters over the colour channels.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import SegformerConfig, SegformerModel
from transformers.utils import logging as transformers_logging

from brgen_build.model_checks import describe_state_dict_mismatch
from detector.config import MIT_INITS, NFAViTConfig, encoder_config, mit_config
from detector.convert import is_original_mit, mit_from_original
from detector.errors import DetectorError
from detector.files import sha256_file
from detector.model import NFAViT
from detector.noise_extractor import extractor_shape, load_layers, read_noiseprint

logger = logging.getLogger(__name__)

FIRST_PATCH_EMBEDDING = "stages.0.patch_embeddings.proj.weight"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")


def read_mit(source: str | Path, variant: str) -> tuple[SegformerConfig, dict[str, torch.Tensor], dict]:
    """Load a MiT encoder: return its config, its state dict in transformers' names and a record of the source.

    `variant` (`b0` or `b2`) gives the config of an original weight file, which carries none.

    Raises:
        DetectorError: the source is missing, or it contains no complete MiT encoder.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return _read_mit_folder(path)
    if path.is_file():
        state = load_state_file(path)
        if is_original_mit(state):
            state = mit_from_original(state)
        return mit_config(variant), state, {"path": str(path.resolve()), "format": "original", "sha256": sha256_file(path)}
    raise DetectorError(
        f"MiT-{variant} weights not found at {path}; pass a local copy of nvidia/mit-{variant} "
        f"(for example from `hf download nvidia/mit-{variant} --local-dir DIR` on a machine with "
        f"internet access) or an original mit_{variant}.pth file"
    )


def _read_mit_folder(path: Path) -> tuple[SegformerConfig, dict[str, torch.Tensor], dict]:
    # The hub's MiT folders also contain an ImageNet classifier. transformers would report those weights as
    # unused and show a progress bar, so both are silenced; missing weights are checked below.
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        encoder, info = SegformerModel.from_pretrained(path, local_files_only=True, output_loading_info=True)
    except (OSError, ValueError) as error:
        raise DetectorError(f"{path} is not a loadable transformers SegFormer folder: {str(error).splitlines()[0]}") from None
    finally:
        transformers_logging.set_verbosity(verbosity)
        transformers_logging.enable_progress_bar()
    if info["missing_keys"]:
        missing = sorted(info["missing_keys"])
        raise DetectorError(
            f"{path} lacks {len(missing)} MiT encoder weight(s), first {', '.join(missing[:3])}; "
            "it must hold a MiT encoder such as nvidia/mit-b0 or nvidia/mit-b2"
        )
    hashes = {file.name: sha256_file(file) for file in sorted(path.iterdir()) if file.suffix in WEIGHT_SUFFIXES}
    return encoder.config, encoder.state_dict(), {"path": str(path.resolve()), "format": "transformers", "sha256": hashes}


def build_pretrained_model(
    mit_b0: str | Path | None,
    mit_b2: str | Path | None,
    noiseprint: str | Path | None,
    random_noise_extractor: bool = False,
    seed: int = 0,
    mit_init: str = "imagenet",
    **options,
) -> tuple[NFAViT, dict]:
    """Build NFA-ViT with ImageNet MiT weights and the Noiseprint++ extractor; return it and its source record.

    `options` are NFAViTConfig fields other than the branches (image_size, topk_ratio, noise_block, ...).
    Without `noiseprint`, `random_noise_extractor` must be set: the extractor then keeps its seeded random
    initialisation, which the record states. `mit_init="random"` builds full-size MiT-b0 and MiT-b2
    branches with transformers' seeded random initialisation instead of reading `mit_b0` and `mit_b2`.

    Raises:
        DetectorError: a weight source is missing or does not fit, or `mit_init` is unknown.
    """
    if mit_init not in MIT_INITS:
        raise DetectorError(f"unknown MiT initialisation {mit_init!r}; expected one of {', '.join(MIT_INITS)}")
    if noiseprint is None and not random_noise_extractor:
        raise DetectorError(missing_noiseprint_message())
    if mit_init == "imagenet" and (mit_b0 is None or mit_b2 is None):
        raise DetectorError(missing_mit_message())
    if noiseprint is not None:
        # The extractor takes the depth and width of the given file.
        extractor_layers, extractor_source = read_noiseprint(noiseprint)
        depth, features = extractor_shape(extractor_layers)
        options = {**options, "extractor_depth": depth, "extractor_features": features}

    if mit_init == "imagenet":
        noise_config, noise_state, noise_source = read_mit(mit_b0, "b0")
        image_config, image_state, image_source = read_mit(mit_b2, "b2")
    else:
        noise_config, image_config = mit_config("b0"), mit_config("b2")
        noise_source, image_source = _random_source(seed, "MiT-b0"), _random_source(seed, "MiT-b2")
        logger.warning("training from randomly initialised MiT branches: results are not comparable with BR-Gen's")
    config = NFAViTConfig(noise_branch=encoder_config(noise_config, 1), image_branch=encoder_config(image_config, 3), **options)

    torch.manual_seed(seed)
    model = NFAViT(config)
    if mit_init == "imagenet":
        _load_branch(model.noise_branch, average_colour_channels(noise_state), "noise branch (MiT-b0)", mit_b0)
        _load_branch(model.image_branch, image_state, "image branch (MiT-b2)", mit_b2)

    if noiseprint is not None:
        load_layers(model.noise_extractor, extractor_layers, noiseprint)
    else:
        extractor_source = {
            "source": "random-init",
            "seed": seed,
            "note": "no Noiseprint++ weights; the extractor keeps its random initialisation and gets no gradient",
        }
        logger.warning("training without Noiseprint++ weights: the noise extractor stays random; results are not comparable with BR-Gen's")
    sources = {"mit_b0": noise_source, "mit_b2": image_source, "noise_extractor": extractor_source}
    return model, sources


def _random_source(seed: int, variant: str) -> dict:
    return {"source": "random-init", "seed": seed, "note": f"no ImageNet {variant} weights; the branch starts from transformers' random initialisation"}


def missing_mit_message() -> str:
    return (
        "NFA-ViT starts from ImageNet MiT weights: pass --mit-b0 and --mit-b2 (local copies of nvidia/mit-b0 and "
        "nvidia/mit-b2, or original mit_b0.pth / mit_b2.pth files). To train without them, pass --mit-init random; "
        "the branches then start from a random initialisation and the results are not comparable with BR-Gen's"
    )


def missing_noiseprint_message() -> str:
    return (
        "NFA-ViT needs Noiseprint++ weights for its noise extractor: pass --noiseprint FILE (TruFor's "
        "noiseprint++.th or BR-Gen's noiseprint.pth; licensed for non-commercial use, not shipped with brgen). "
        "To train without them, pass --random-noise-extractor; the extractor then stays randomly initialised "
        "and the results are not comparable with BR-Gen's"
    )


def average_colour_channels(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return a copy of a MiT state dict whose first patch embedding reads one channel: the RGB filters averaged.

    A state dict without that embedding is copied unchanged, so that loading it reports every missing key.
    """
    state = dict(state)
    if FIRST_PATCH_EMBEDDING in state:
        state[FIRST_PATCH_EMBEDDING] = state[FIRST_PATCH_EMBEDDING].mean(dim=1, keepdim=True)
    return state


def _load_branch(branch: SegformerModel, state: dict[str, torch.Tensor], label: str, source: str | Path) -> None:
    mismatch = describe_state_dict_mismatch(branch.state_dict(), state)
    if mismatch:
        raise DetectorError(f"{label}: {source} does not fit: {mismatch}. Check that it contains that MiT encoder")
    branch.load_state_dict(state, strict=True)


def load_state_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors or a torch file (weights only), unwrapping a `state_dict` or `model` entry.

    Raises:
        DetectorError: the file cannot be read as weights.
    """
    if path.suffix == ".safetensors":
        return load_file(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise DetectorError(
            f"{path} cannot be loaded as plain weights ({str(error).splitlines()[0]}). If the file comes from a "
            "source you trust, save its state dict alone with torch.save(torch.load(path, weights_only=False)['model'], new_path) "
            "and pass the new file"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not all(isinstance(value, torch.Tensor) for value in data.values()):
        raise DetectorError(f"{path} contains no state dict of tensors; pass a weight file")
    return data
