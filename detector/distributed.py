"""Single-process and torchrun runs behind one interface.

Under torchrun (`WORLD_SIZE` > 1) the process group uses NCCL on GPUs and gloo on CPUs; each process
takes the GPU of its `LOCAL_RANK`. A plain `python` or `brgen` call is a world of one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from brgen_build.model_checks import check_device, local_rank_gpu
from detector.errors import DetectorError

PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class Runtime:
    """This process's place in the run: rank, world size, device and autocast dtype (None = float32)."""

    rank: int
    world_size: int
    device: torch.device
    autocast_dtype: torch.dtype | None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def gather(self, value: Any) -> list[Any]:
        """Return the `value` of every process, in rank order."""
        if not self.distributed:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def broadcast(self, value: Any) -> Any:
        """Return rank 0's `value` in every process."""
        if not self.distributed:
            return value
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def sum(self, values: list[float]) -> list[float]:
        """Return the element-wise sum of `values` over all processes."""
        if not self.distributed:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def autocast(self) -> torch.autocast:
        enabled = self.autocast_dtype is not None
        return torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.bfloat16, enabled=enabled)


def start(device: str = "auto", precision: str = "auto") -> Runtime:
    """Join the torchrun process group if there is one, pick the device and the autocast dtype.

    Args:
        device: `auto` (a GPU when one is visible), `cpu`, `cuda` or `cuda:N`. Under torchrun a GPU
            device always becomes `cuda:LOCAL_RANK`.
        precision: `auto` (bf16 autocast on GPUs, float32 on CPUs), `bf16` or `fp32`.

    Raises:
        DetectorError: the device is invalid or not available to this process, or the precision is unknown.
    """
    if precision not in PRECISIONS:
        raise DetectorError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    device = check_device(device, DetectorError)

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if device.startswith("cuda"):
        if world_size > 1:
            device = local_rank_gpu(os.environ.get("LOCAL_RANK", "0"), DetectorError)
            torch.cuda.set_device(torch.device(device))
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")

    torch_device = torch.device(device)
    if precision == "auto":
        precision = "bf16" if torch_device.type == "cuda" else "fp32"
    return Runtime(rank, world_size, torch_device, torch.bfloat16 if precision == "bf16" else None)


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
