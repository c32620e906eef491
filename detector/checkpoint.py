"""Checkpoints of detector training runs, and loading a model for evaluation.

A run folder contains `checkpoints/epoch-NNNN/` folders, each with

- `model.safetensors`: the model's full state dict (extractor, both branches, heads);
- `config.json`: the NFAViTConfig that rebuilds the model;
- `training_state.pt`: epoch, step, optimizer and scheduler state, read with `torch.load(weights_only=True)`,

and `checkpoints/latest.json`, which names the newest complete checkpoint. A checkpoint folder is written
under a temporary name and renamed when complete, so an interrupted save never looks finished.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from brgen_build.model_checks import describe_state_dict_mismatch
from detector.config import NFAViTConfig, published_config
from detector.convert import nfa_vit_from_published
from detector.errors import DetectorError
from detector.files import write_atomically, write_json
from detector.model import NFAViT
from detector.pretrained import load_state_file

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
LATEST = "latest.json"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "training_state.pt"


def checkpoint_name(epoch: int) -> str:
    """Folder name of the checkpoint after `epoch` (0-based): epoch-0001 is the end of the first epoch."""
    return f"epoch-{epoch + 1:04d}"


def save_checkpoint(run_folder: Path, model: NFAViT, optimizer: torch.optim.Optimizer, scheduler, epoch: int, step: int) -> Path:
    """Write the checkpoint after `epoch`, point latest.json at it and return its folder."""
    folder = Path(run_folder) / CHECKPOINTS
    final = folder / checkpoint_name(epoch)
    temporary = folder / f".tmp-{final.name}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)

    state = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
    # write_atomically gives each file the umask's mode; save_file alone would leave 0o600.
    write_atomically(temporary / MODEL_FILE, lambda path: save_file(state, path, metadata={"format": "pt", "epoch": str(epoch)}))
    write_json(temporary / CONFIG_FILE, model.config.to_dict())
    training_state = {"epoch": epoch, "step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    write_atomically(temporary / STATE_FILE, lambda path: torch.save(training_state, path))

    if final.exists():
        shutil.rmtree(final)
    os.replace(temporary, final)
    write_json(folder / LATEST, {"checkpoint": final.name, "epoch": epoch, "step": step})
    return final


def latest_checkpoint(run_folder: Path) -> Path | None:
    """Return the newest complete checkpoint folder of a run, or None if it has none."""
    pointer = Path(run_folder) / CHECKPOINTS / LATEST
    if not pointer.is_file():
        return None
    folder = pointer.parent / json.loads(pointer.read_text())["checkpoint"]
    if not (folder / MODEL_FILE).is_file():
        raise DetectorError(f"{pointer} names {folder}, which has no {MODEL_FILE}; restore the folder or delete {pointer} to start over")
    return folder


def remove_checkpoint(run_folder: Path, epoch: int) -> None:
    shutil.rmtree(Path(run_folder) / CHECKPOINTS / checkpoint_name(epoch), ignore_errors=True)


def load_training_state(folder: Path, model: NFAViT, optimizer: torch.optim.Optimizer, scheduler) -> tuple[int, int]:
    """Restore the model, optimizer and scheduler from a checkpoint folder; return its (epoch, step)."""
    model.load_state_dict(load_file(folder / MODEL_FILE), strict=True)
    state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["epoch"]), int(state["step"])


def load_model(path: str | Path) -> tuple[NFAViT, dict]:
    """Load a model for evaluation; return it and a record of its source.

    `path` is a brgen run folder (its newest checkpoint is used), a checkpoint folder, or a checkpoint's
    model.safetensors with config.json beside it. It can also be a state dict of the published NFA-ViT
    (`.pth` or `.pt`, or an IMDLBenCo checkpoint with the state dict under `model`). brgen converts its
    names and gives it the full-size configuration.

    Raises:
        DetectorError: the path is missing, unreadable or does not fit NFA-ViT.
    """
    path = Path(path).expanduser()
    if path.is_dir() and (path / CHECKPOINTS / LATEST).is_file():
        path = latest_checkpoint(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise DetectorError(f"checkpoint {path} not found; pass a checkpoint folder (with {MODEL_FILE} and {CONFIG_FILE}) or a published NFA-ViT .pth file")

    if path.suffix == ".safetensors":
        config_path = path.parent / CONFIG_FILE
        if not config_path.is_file():
            raise DetectorError(f"{path} has no {CONFIG_FILE} beside it; brgen needs it to rebuild the model")
        config = NFAViTConfig.from_dict(json.loads(config_path.read_text()))
        try:
            state = load_file(path)
        except (SafetensorError, OSError) as error:
            raise DetectorError(f"cannot read {path}: {error}") from None
        source = "brgen"
    else:
        config = published_config()
        state = nfa_vit_from_published(load_state_file(path))
        source = "published NFA-ViT"

    model = NFAViT(config)
    mismatch = describe_state_dict_mismatch(model.state_dict(), state)
    if mismatch:
        raise DetectorError(f"{path} does not fit NFA-ViT with its configuration: {mismatch}. Pass a checkpoint written by brgen or a published NFA-ViT state dict")
    model.load_state_dict(state, strict=True)
    return model, {"path": str(path.resolve()), "format": source}
