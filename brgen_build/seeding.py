"""Seeds and shards as pure functions of names.

The seed of an item and the shard that owns it depend only on the recipe seed, the item's name and the
shard count. They never depend on the order of items, on the shard that ran them, or on the time.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

from brgen_build.errors import BrgenError


def stable_hash(*parts: object) -> int:
    """Hash the parts, joined by ':', to a 64-bit integer that is the same on every machine and Python run."""
    text = ":".join(str(part) for part in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def derive_seed(recipe_seed: int, purpose: str, name: str) -> int:
    """Seed for one item and one purpose (a method, a mask choice), in 0..2**31-1 so every RNG accepts it."""
    return stable_hash(recipe_seed, purpose, name) % (2**31)


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`: the items whose name hashes to `index` modulo `count`."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise BrgenError(f"invalid shard {self.index}/{self.count}: the index must be in 0..count-1, e.g. --shard 0/4")

    def owns(self, name: str) -> bool:
        return self.count == 1 or stable_hash("shard", name) % self.count == self.index

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


def shard_from_environment(environ: dict | None = None) -> Shard:
    """Read the shard a launcher assigned: torchrun / accelerate (`RANK`, `WORLD_SIZE`) or a Slurm array.

    Returns shard 0/1 when no launcher variables are set.
    """
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" in environ and "RANK" in environ:
        return Shard(int(environ["RANK"]), int(environ["WORLD_SIZE"]))
    if "SLURM_ARRAY_TASK_ID" in environ and "SLURM_ARRAY_TASK_COUNT" in environ:
        task_min = int(environ.get("SLURM_ARRAY_TASK_MIN", "0"))
        return Shard(int(environ["SLURM_ARRAY_TASK_ID"]) - task_min, int(environ["SLURM_ARRAY_TASK_COUNT"]))
    return Shard()
