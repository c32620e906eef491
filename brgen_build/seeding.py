"""Seeds and shards as pure functions of names.

The seed of an item and the shard that owns it depend only on the recipe seed, the item's name and the
shard count. They never depend on the order of items, on the shard that ran them, or on the time.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import Mapping

from brgen_build.errors import BrgenError


def stable_hash(*parts: object) -> int:
    """Hash the parts, joined by ':', to a 64-bit integer that is the same on every machine and Python run."""
    text = ":".join(str(part) for part in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def derive_seed(recipe_seed: int, purpose: str, name: str) -> int:
    """Seed for one item and one purpose (a method, a mask choice), in 0..2**31-1 so every RNG accepts it."""
    return stable_hash(recipe_seed, purpose, name) % (2**31)


def shard_index(name: str, count: int) -> int:
    """Index of the shard that owns item `name` among `count` shards."""
    return stable_hash("shard", name) % count


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`: the items whose name hashes to `index` modulo `count`."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise BrgenError(f"invalid shard {self.index}/{self.count}: the index must be in 0..count-1, e.g. --shard 0/4")

    def owns(self, name: str) -> bool:
        return self.count == 1 or shard_index(name, self.count) == self.index

    @property
    def label(self) -> str:
        return f"shard-{self.index}-of-{self.count}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


_SHARD_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> Shard:
    """Parse `I/N` (0-based index I of N shards)."""
    match = _SHARD_PATTERN.match(text)
    if not match:
        raise BrgenError(f"invalid shard {text!r}: write it as INDEX/COUNT with a 0-based index, e.g. --shard 0/4")
    return Shard(int(match.group(1)), int(match.group(2)))


def detect_shard(environ: Mapping[str, str] | None = None) -> tuple[Shard, str]:
    """Read the shard a launcher assigned and describe where it came from, for the log.

    - torchrun and `accelerate launch` (which runs torchrun) set `RANK` and `WORLD_SIZE`.
    - A Slurm array sets `SLURM_ARRAY_TASK_ID`, `SLURM_ARRAY_TASK_COUNT`, `SLURM_ARRAY_TASK_MIN` and
      `SLURM_ARRAY_TASK_STEP`; task ids `MIN, MIN+STEP, ...` become shards 0, 1, ...
    - Both together (torchrun started in each task of a Slurm array) give shard `task * WORLD_SIZE + RANK`
      of `task count * WORLD_SIZE`, so every process of every task gets its own shard.

    Raises:
        BrgenError: a variable is not an integer, or the values do not form a valid shard.
    """
    environ = os.environ if environ is None else environ
    ranks = _torchrun_rank(environ)
    array = _slurm_array_task(environ)
    if ranks and array:
        (rank, world), (task, tasks) = ranks, array
        shard = _checked_shard(task * world + rank, tasks * world, "Slurm array task x torchrun rank")
        return shard, f"Slurm array task {task} of {tasks} x torchrun/accelerate rank {rank} of {world}"
    if ranks:
        rank, world = ranks
        return _checked_shard(rank, world, "RANK and WORLD_SIZE"), f"torchrun/accelerate (RANK={rank}, WORLD_SIZE={world})"
    if array:
        task, tasks = array
        return _checked_shard(task, tasks, "the Slurm array variables"), f"Slurm array (task {task} of {tasks})"
    return Shard(), "no launcher variables set: one shard"


def _integer(environ: Mapping[str, str], name: str, default: int | None = None) -> int:
    text = environ.get(name)
    if text is None:
        if default is None:
            raise BrgenError(f"environment variable {name} is not set")
        return default
    try:
        return int(text)
    except ValueError:
        raise BrgenError(f"environment variable {name}={text!r} is not an integer. Unset it or pass --shard I/N") from None


def _torchrun_rank(environ: Mapping[str, str]) -> tuple[int, int] | None:
    if "RANK" not in environ or "WORLD_SIZE" not in environ:
        return None
    return _integer(environ, "RANK"), _integer(environ, "WORLD_SIZE")


def _slurm_array_task(environ: Mapping[str, str]) -> tuple[int, int] | None:
    if "SLURM_ARRAY_TASK_ID" not in environ or "SLURM_ARRAY_TASK_COUNT" not in environ:
        return None
    task_id = _integer(environ, "SLURM_ARRAY_TASK_ID")
    count = _integer(environ, "SLURM_ARRAY_TASK_COUNT")
    first = _integer(environ, "SLURM_ARRAY_TASK_MIN", 0)
    step = max(_integer(environ, "SLURM_ARRAY_TASK_STEP", 1), 1)
    index, remainder = divmod(task_id - first, step)
    if remainder or not 0 <= index < count:
        raise BrgenError(
            f"Slurm array task id {task_id} does not map to a shard (min {first}, step {step}, count {count}): "
            f"submit the array as --array=0-{count - 1} (a range, optionally with :STEP and %LIMIT), or pass --shard I/{count}"
        )
    return index, count


def _checked_shard(index: int, count: int, source: str) -> Shard:
    if count < 1 or not 0 <= index < count:
        raise BrgenError(f"invalid shard {index}/{count} from {source}: the index must be in 0..count-1. Pass --shard I/N to override it")
    return Shard(index, count)
