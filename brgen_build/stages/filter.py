"""Stage `filter/<method>`: score each forgery, regenerate the ones outside the recipe's thresholds, drop the rest.

Every scorer under the recipe's `filter.scorers` scores every forgery of the method. A forgery whose scores
miss one of the method's thresholds (`filter.thresholds.<method>`) is made again with the next derived seed,
`derive_seed(recipe seed, "<method>#attempt<k>", forgery id)` for attempt k = 1, 2, ... (attempt 0 is the
inpaint stage's forgery, seed `derive_seed(recipe seed, method, forgery id)`). The first attempt within the
thresholds replaces the `Tp` file. When `filter.max_attempts` attempts all miss, the forgery is dropped:
its `Tp` and `Gt` files are deleted.

Records:
- `manifests/filter/<method>/`: one record per forgery with every attempt's seed, scores, failed checks,
  prompt and thumbnail; status `ok` (kept, `files` = the final Tp and Gt) or `skipped` (dropped).
- `manifests/inpaint/<method>/filter-<shard>.jsonl`: the forgery's record again, updated to the kept
  attempt (seed, files, facts) and with a `quality` summary, or with status `skipped` and the reason when
  dropped. It is the newest record of the forgery, so `brgen inpaint` does not remake the forgery,
  `brgen verify` counts a dropped forgery as skipped, and every later reader finds the seed of the file.
- `filter/<method>/<forgery id>_attempt<k>.png`: a thumbnail of each attempt's mask box, for `brgen report filter`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

import cv2
import numpy as np

from brgen_build.engine import Item, Stage, files_intact
from brgen_build.errors import BrgenError
from brgen_build.files import read_png, write_png
from brgen_build.layout import DatasetRoot, mask_id
from brgen_build.manifest import FAILED, OK, SKIPPED, ManifestWriter, read_records
from brgen_build.recipe import Recipe
from brgen_build.seeding import Shard, derive_seed
from brgen_build.stages.inpaint import render_forgeries, stage_name as inpaint_stage_name
from inpainters.base import Inpainter, InpaintRequest
from inpainters.quality import registry as scorer_registry
from inpainters.quality.base import Scorer, crop_sample, mask_box

logger = logging.getLogger(__name__)

PASSED = "passed"
REGENERATED = "regenerated"
DROPPED = "dropped"


def stage_name(method: str) -> str:
    return f"filter/{method}"


def attempt_seed(recipe_seed: int, method: str, forgery: str, attempt: int) -> int:
    """Seed of attempt `attempt` at a forgery; attempt 0 has the inpaint stage's seed."""
    purpose = method if attempt == 0 else f"{method}#attempt{attempt}"
    return derive_seed(recipe_seed, purpose, forgery)


def prompt_from_classes(mask_record: dict) -> str:
    """Build a prompt from the mask's class names, for forgeries whose record has no `prompt`.

    Stuff masks name the regenerated classes (`sky-other-merged` reads as `sky`); Background masks name
    the kept object, so the regenerated region is described as its surroundings.
    """
    names = []
    for entry in mask_record.get("classes") or []:
        words = [word for word in str(entry.get("name", "")).split("-") if word not in ("merged", "other", "stuff")]
        if words and " ".join(words) not in names:
            names.append(" ".join(words))
    listed = ", ".join(names) or "a scene"
    if mask_record.get("kind") == "Background":
        return f"the background around a {listed}"
    return f"a photo of {listed}"


def build_scorers(recipe: Recipe, device: str | None = None) -> list[Scorer]:
    """Create the recipe's scorers; `device` overrides `filter.device`."""
    spec = recipe.filter
    return [scorer_registry.get(name)(params, device or spec.device) for name, params in spec.scorers.items()]


@dataclass
class Candidate:
    """One attempt at a forgery: its image and how it was made."""

    attempt: int
    seed: int
    image: np.ndarray
    facts: dict = field(default_factory=dict)
    regenerated: bool = False
    prompt: str = ""
    prompt_source: str = ""


@dataclass
class ForgeryState:
    """The state of one forgery while the stage scores and regenerates it."""

    item: Item
    record: dict
    mask_record: dict
    real: np.ndarray
    mask: np.ndarray
    hole: np.ndarray
    candidate: Candidate
    attempts: list[dict] = field(default_factory=list)
    passed: bool = False


class FilterStage(Stage):
    def __init__(self, root: DatasetRoot, recipe: Recipe, inpainter: Inpainter, scorers: list[Scorer],
                 shard: Shard = Shard(), batch_size: int | None = None):
        super().__init__(root)
        if recipe.filter is None:
            raise BrgenError(f"{recipe.path or 'the recipe'} has no `filter` section; add one to run the filter stage (see README.md)")
        self.recipe = recipe
        self.spec = recipe.filter
        self.inpainter = inpainter
        self.method = inpainter.name
        self.scorers = scorers
        self.shard = shard
        self.name = stage_name(self.method)
        self.batch_size = batch_size or self.spec.batch_size
        self.thresholds = self.spec.method_thresholds(self.method)
        self._inpainter_loaded = False

    @property
    def updates_path(self) -> Path:
        """The file this stage appends updated forgery records to, next to the inpaint stage's own."""
        return self.root.manifest_dir(inpaint_stage_name(self.method)) / f"filter-{self.shard.label}.jsonl"

    def thumbnail_path(self, forgery: str, attempt: int) -> Path:
        return self.root.path / "filter" / self.method / f"{forgery}_attempt{attempt}.png"

    def plan(self) -> list[Item]:
        forgeries = read_records(self.root.manifest_dir(inpaint_stage_name(self.method)))
        self._delete_dropped_files(forgeries)
        items = []
        for record in sorted(forgeries.values(), key=lambda record: record["id"]):
            if record["status"] == OK or _is_dropped(record):
                items.append(Item(record["id"], record["split"], record))
        return items

    def _delete_dropped_files(self, forgeries: dict[str, dict]) -> None:
        """Delete the Tp and Gt files that a run stopped between dropping a forgery and deleting them left behind."""
        for record in forgeries.values():
            if _is_dropped(record):
                for path in (self.root.tp(record["split"], record["id"]), self.root.gt(record["split"], record["id"])):
                    if path.exists():
                        logger.info("%s: deleting %s of dropped forgery %s", self.name, self.root.relative(path), record["id"])
                        path.unlink()

    def prepare(self, pending: list[Item]) -> None:
        for scorer in self.scorers:
            scorer.check()
        if self.thresholds and self.spec.max_attempts > 1:
            self.inpainter.check()
        for scorer in self.scorers:
            scorer.load()
        self._scorer_facts = {scorer.name: {"checkpoint": scorer.checkpoint(), "settings": scorer.settings()} for scorer in self.scorers}
        self._reals = read_records(self.root.manifest_dir("reals"))
        self._masks = read_records(self.root.manifest_dir("masks"))

    def batches(self, pending: list[Item]):
        """Batches of forgeries whose photos share a size, so regenerations batch without extra padding."""
        def size(item: Item) -> tuple[int, int]:
            real = self._reals.get(item.payload["real"], {})
            return real.get("height", 0), real.get("width", 0)

        for _, group in groupby(sorted(pending, key=lambda item: (size(item), item.id)), key=size):
            group = list(group)
            for start in range(0, len(group), self.batch_size):
                yield group[start : start + self.batch_size]

    def process(self, batch: list[Item]) -> list[dict]:
        records: dict[str, dict] = {}
        states = []
        for item in batch:
            if _is_dropped(item.payload):
                records[item.id] = self._dropped_again(item)
            elif not files_intact(self.root, item.payload):
                records[item.id] = {
                    "id": item.id, "split": item.split, "status": FAILED, "method": self.method,
                    "reason": f"its Tp or Gt file differs from the inpaint record; run `brgen inpaint --method {self.method}` first",
                }
            else:
                states.append(self._start(item))

        self._score(states)
        while True:
            retry = [state for state in states if not state.passed and state.candidate.attempt + 1 < self.spec.max_attempts]
            if not retry:
                break
            self._regenerate(retry)
            self._score(retry)

        if states:
            with ManifestWriter(self.updates_path) as updates:
                for state in states:
                    records[state.item.id] = self._finish(state, updates)
        return [records[item.id] for item in batch]

    def _start(self, item: Item) -> ForgeryState:
        """Load a forgery as its inpaint record describes it: the current Tp is the attempt the record names."""
        record = item.payload
        mask_record = self._masks[mask_id(record["kind"], record["real"])]
        real = read_png(self.root.absolute(self._reals[record["real"]]["files"]["au"]["path"]))
        mask = read_png(self.root.absolute(mask_record["files"]["mask"]["path"]))
        hole = read_png(self.root.absolute(record["files"]["gt"]["path"])) > 127
        quality = record.get("quality") or {}
        attempt = quality.get("accepted_attempt") or 0
        candidate = Candidate(attempt, record["seed"], read_png(self.root.absolute(record["files"]["tp"]["path"])))
        self._set_prompt(candidate, record.get("prompt"), mask_record)
        earlier = [entry for entry in quality.get("attempts", []) if entry["attempt"] < attempt]
        return ForgeryState(item, record, mask_record, real, mask, hole, candidate, attempts=earlier)

    @staticmethod
    def _set_prompt(candidate: Candidate, record_prompt: str | None, mask_record: dict) -> None:
        """Take the prompt the method returned for a regeneration, else the forgery record's, else build one from the mask's classes."""
        if candidate.facts.get("prompt"):
            candidate.prompt, candidate.prompt_source = candidate.facts["prompt"], "method"
        elif record_prompt:
            candidate.prompt, candidate.prompt_source = record_prompt, "forgery record"
        else:
            candidate.prompt, candidate.prompt_source = prompt_from_classes(mask_record), "mask classes"

    def _score(self, states: list[ForgeryState]) -> None:
        """Score every state's current candidate with every scorer and record the attempt."""
        if not states:
            return
        scores: list[dict[str, float | None]] = [{} for _ in states]
        for scorer in self.scorers:
            samples = [
                crop_sample(state.item.id, state.candidate.image, state.real, state.hole, state.candidate.prompt, scorer.crop)
                for state in states
            ]
            for index, value in enumerate(scorer.score(samples)):
                scores[index][scorer.name] = None if value is None else round(value, 6)

        for state, attempt_scores in zip(states, scores):
            failed = [
                violation
                for name, bounds in self.thresholds.items()
                if (violation := bounds.violation(name, attempt_scores.get(name))) is not None
            ]
            state.passed = not failed
            candidate = state.candidate
            entry = {
                "attempt": candidate.attempt,
                "seed": candidate.seed,
                "scores": attempt_scores,
                "failed": failed,
                "passed": state.passed,
                "prompt": candidate.prompt,
                "prompt_source": candidate.prompt_source,
            }
            thumbnail = self._write_thumbnail(state)
            if thumbnail is not None:
                entry["thumbnail"] = thumbnail
            state.attempts.append(entry)

    def _write_thumbnail(self, state: ForgeryState) -> str | None:
        if self.spec.thumbnail_px == 0:
            return None
        box = mask_box(state.hole)
        image = state.candidate.image[box] if box is not None else state.candidate.image
        height, width = image.shape[:2]
        scale = self.spec.thumbnail_px / max(height, width)
        if scale < 1:
            image = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
        path = self.thumbnail_path(state.item.id, state.candidate.attempt)
        write_png(path, image)
        return self.root.relative(path)

    def _regenerate(self, states: list[ForgeryState]) -> None:
        """Make the next attempt of each state with its next derived seed, in batches of equal photo size."""
        if not self._inpainter_loaded:
            self.inpainter.check()
            self.inpainter.load()
            self._checkpoint = self.inpainter.checkpoint()
            self._inpainter_loaded = True

        def shape(state: ForgeryState) -> tuple[int, ...]:
            return state.real.shape

        for _, group in groupby(sorted(states, key=shape), key=shape):
            group = list(group)
            for start in range(0, len(group), self.inpainter.batch_size):
                chunk = group[start : start + self.inpainter.batch_size]
                requests = []
                for state in chunk:
                    attempt = state.candidate.attempt + 1
                    seed = attempt_seed(self.recipe.seed, self.method, state.item.id, attempt)
                    requests.append(InpaintRequest(state.item.id, state.real, state.mask, seed, state.mask_record))
                for state, request, (forgery, _, facts) in zip(chunk, requests, render_forgeries(self.inpainter, requests)):
                    state.candidate = Candidate(state.candidate.attempt + 1, request.seed, forgery, facts, regenerated=True)
                    self._set_prompt(state.candidate, None, state.mask_record)

    def _finish(self, state: ForgeryState, updates: ManifestWriter) -> dict:
        """Write the kept forgery or delete a dropped one; append the updated forgery record and return the filter record."""
        item, record, candidate = state.item, state.record, state.candidate
        if not state.passed:
            outcome = DROPPED
        elif candidate.attempt == 0:
            outcome = PASSED
        else:
            outcome = REGENERATED
        summary = {
            "outcome": outcome,
            "accepted_attempt": candidate.attempt if state.passed else None,
            "scores": state.attempts[-1]["scores"] if state.passed else None,
            "thresholds": {name: bounds.to_json() for name, bounds in self.thresholds.items()},
            "attempts": [{key: entry[key] for key in ("attempt", "seed", "scores", "failed", "passed")} for entry in state.attempts],
            "manifest": f"manifests/{self.name}",
        }
        filter_record = {
            "id": item.id,
            "split": item.split,
            "method": self.method,
            "real": record["real"],
            "kind": record["kind"],
            **{key: summary[key] for key in ("outcome", "accepted_attempt", "scores", "thresholds")},
            "attempts": state.attempts,
            "scorers": self._scorer_facts,
        }

        if not state.passed:
            reason = f"dropped by the quality filter after {len(state.attempts)} attempt(s); last attempt: {'; '.join(state.attempts[-1]['failed'])}"
            updates.append({**_without_run_fields(record), "status": SKIPPED, "reason": reason, "files": {}, "quality": summary, "updated_by": self.name})
            for path in (self.root.tp(item.split, item.id), self.root.gt(item.split, item.id)):
                path.unlink(missing_ok=True)
            logger.info("%s: %s %s", self.name, item.id, reason)
            return {**filter_record, "status": SKIPPED, "reason": reason}

        files = dict(record["files"])
        updated = {**_without_run_fields(record), "quality": summary}
        if candidate.regenerated:
            tp_path = self.root.tp(item.split, item.id)
            files["tp"] = {"path": self.root.relative(tp_path), **write_png(tp_path, candidate.image)}
            updated.update(candidate.facts)
            updated.update({"seed": candidate.seed, "checkpoint": self._checkpoint, "settings": self.inpainter.settings(), "device": self.inpainter.device})
        updates.append({**updated, "files": files, "updated_by": self.name})
        return {**filter_record, "status": OK, "files": files}

    def _dropped_again(self, item: Item) -> dict:
        """Rebuild the filter record of a forgery whose inpaint record already marks it as dropped by the filter."""
        record = item.payload
        quality = record["quality"]
        return {
            "id": item.id, "split": item.split, "method": self.method, "real": record["real"], "kind": record["kind"],
            "outcome": DROPPED, "accepted_attempt": None, "scores": None, "thresholds": quality.get("thresholds", {}),
            "attempts": quality.get("attempts", []), "status": SKIPPED, "reason": record["reason"],
        }


def _is_dropped(record: dict) -> bool:
    return record["status"] == SKIPPED and (record.get("quality") or {}).get("outcome") == DROPPED


def _without_run_fields(record: dict) -> dict:
    """Copy a forgery record without the fields the manifest writer sets on each append."""
    return {key: value for key, value in record.items() if key not in ("finished_at", "brgen_version")}
