"""Checks that the model packages share: torch device strings, the GPU of a torchrun process, and state
dicts that do not fit a model.

`inpainters`, `mask_gen` and `detector` import this module as they import `brgen_build.errors`: it imports
nothing else from brgen_build, and torch only inside its functions, so importing it stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from brgen_build.errors import BrgenError

# Device types brgen runs models on. torch has more (xpu, meta, ...), but no brgen code path handles them.
DEVICE_TYPES = ("cpu", "cuda", "mps")
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def check_device(device: str, error: type[BrgenError] = BrgenError, context: str = "") -> str:
    """Validate a torch device string before any model loads; return it with `auto` resolved.

    `auto` becomes `cuda` when a GPU is visible, else `cpu`. Any other value must parse as a torch device
    of a type in DEVICE_TYPES, and a CUDA or MPS device must be available to this process, with an index
    below the number of visible GPUs.

    Args:
        device: the value from the command line (`--device`) or the recipe (`device`).
        error: the BrgenError subclass to raise, so that each package keeps its own error type.
        context: a prefix for the message, such as the method's name.

    Raises:
        error: the value is invalid or names a device this process cannot use; the message names the
            value and the values that work.
    """
    import torch

    prefix = f"{context}: " if context else ""
    text = str(device).strip()
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError):
        raise error(f"{prefix}invalid device {device!r}; use {DEVICE_CHOICES} (--device, or `device` in the recipe)") from None
    if parsed.type not in DEVICE_TYPES:
        raise error(f"{prefix}device {device!r} is not supported; use {DEVICE_CHOICES}, or mps on Apple silicon")

    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise error(f"{prefix}device {device!r} requested, but {_no_gpu_reason()}; use --device cpu, or auto to take a GPU when there is one")
        visible = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= visible:
            raise error(
                f"{prefix}device {device!r} requested, but this process sees {visible} GPU(s), cuda:0 to cuda:{visible - 1}; "
                "pass a lower index or check CUDA_VISIBLE_DEVICES"
            )
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise error(f"{prefix}device {device!r} requested, but MPS (Apple silicon) is not available here; use --device cpu")
    return str(parsed)


def local_rank_gpu(local_rank_text: str, error: type[BrgenError] = BrgenError) -> str:
    """Return the GPU of a launcher's process: `cuda:<LOCAL_RANK>`, or `cuda:0` when one GPU is visible to it.

    torchrun and `accelerate launch` set LOCAL_RANK for each process of a node. A process with a single
    visible GPU (CUDA_VISIBLE_DEVICES set per process) uses it whatever its LOCAL_RANK.

    Raises:
        error: LOCAL_RANK is not an integer, or is beyond the GPUs this process sees.
    """
    import torch

    try:
        local_rank = int(local_rank_text)
    except ValueError:
        raise error(f"LOCAL_RANK={local_rank_text!r} is not an integer; unset it or pass --device cuda:N") from None
    visible = torch.cuda.device_count()
    if local_rank < visible:
        return f"cuda:{local_rank}"
    if visible == 1:
        return "cuda:0"
    raise error(
        f"LOCAL_RANK={local_rank} but this process sees {visible} GPU(s); start at most {visible} processes per node "
        "(torchrun --nproc_per_node) or pass --device cuda:N"
    )


def _no_gpu_reason() -> str:
    import torch

    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is a CPU-only build"
    return "torch sees no CUDA GPU (check the driver, the job's GPU allocation and CUDA_VISIBLE_DEVICES)"


def describe_state_dict_mismatch(expected: Mapping[str, Any], actual: Mapping[str, Any], shown: int = 5) -> str | None:
    """Describe how a state dict differs from what a model expects; return None when names and shapes match.

    The text gives the count of missing keys, unexpected keys and tensors of another shape, each with its
    first `shown` names, so that a wrong file gives a short message instead of thousands of key names.

    Args:
        expected: the model's `state_dict()`; tensors on the meta device work, because only shapes are read.
        actual: the state dict read from the file.
    """
    missing = [name for name in expected if name not in actual]
    unexpected = [name for name in actual if name not in expected]
    reshaped = [
        f"{name} {_shape(actual[name])} in the file, {_shape(expected[name])} expected"
        for name in expected
        if name in actual and tuple(expected[name].shape) != tuple(actual[name].shape)
    ]
    parts = [
        _count_and_first(missing, "missing key", shown),
        _count_and_first(unexpected, "unexpected key", shown),
        _count_and_first(reshaped, "tensor of another shape", shown, plural="tensors of another shape"),
    ]
    parts = [part for part in parts if part]
    return ", ".join(parts) if parts else None


def _count_and_first(names: list[str], noun: str, shown: int, plural: str | None = None) -> str:
    if not names:
        return ""
    label = noun if len(names) == 1 else plural or f"{noun}s"
    if len(names) <= shown:
        return f"{len(names)} {label} ({'; '.join(names)})"
    return f"{len(names)} {label} (first {shown}: {'; '.join(names[:shown])})"


def _shape(tensor: Any) -> str:
    return "x".join(str(size) for size in tensor.shape) or "scalar"
