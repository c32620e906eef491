"""NFA-ViT training: the published recipe, in one process or under torchrun.

The defaults are those of the published BR-Gen run. The optimizer is AdamW with betas (0.9, 0.999). The
learning rate rises linearly from 0 to 2e-4 over 4 warm-up epochs and then follows a half cosine down to
`min_lr` at the last step, updated every step. Weight decay 0.05 applies to weights but not to biases and
other 1-D parameters, the split of timm's optimizer factory, which the published run used. Each process
takes 16 images per step, for 200 epochs with seed 42. Evaluation runs every 20 epochs and after the last
one. On GPUs the forward pass runs under bf16 autocast.

A run folder contains:

- `run.json`: settings, model config, weight sources (with hashes), library versions, world size;
- `checkpoints/`: see `detector.checkpoint`; a checkpoint is kept for every evaluated epoch and the last;
- `train_log.csv`: one row per epoch (mean losses, learning rate, throughput);
- `eval_log.csv` and `eval/epoch-NNNN.json`: the metrics of each evaluation;
- `tensorboard/`: the same numbers per step, when the `tensorboard` package is installed.

Reruns with `resume` continue from the newest checkpoint, and reject settings that would change the
result (learning rate, epochs, batch size, world size, ...), because mixing them would make the run
impossible to reproduce.
"""

from __future__ import annotations

import csv
import datetime
import json
import logging
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import transformers
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from detector.checkpoint import checkpoint_name, latest_checkpoint, load_training_state, remove_checkpoint, save_checkpoint
from detector.config import NFAViTConfig
from detector.data import ForgeryDataset, make_loader, normalize, read_dataset_specs, read_samples
from detector.distributed import Runtime, start, stop
from detector.errors import DetectorError
from detector.evaluate import evaluate, format_table
from detector.files import write_json, write_text
from detector.model import NFAViT, nfa_vit_loss
from detector.pretrained import build_pretrained_model, missing_mit_message, missing_noiseprint_message

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
TRAIN_LOG = "train_log.csv"
EVAL_LOG = "eval_log.csv"
# Settings that change what a run computes; a resumed run must keep them.
RESULT_SETTINGS = ("train", "epochs", "batch_size", "lr", "min_lr", "weight_decay", "warmup_epochs", "seed", "image_size", "noise_block")


@dataclass
class TrainSettings:
    """Settings of a training run, as `brgen train-detector` passes them. Batch sizes are per process, lengths in epochs."""

    train: list[str]
    output: str
    val: list[str] = field(default_factory=list)
    mit_b0: str | None = None
    mit_b2: str | None = None
    noiseprint: str | None = None
    random_noise_extractor: bool = False
    mit_init: str = "imagenet"
    epochs: int = 200
    batch_size: int = 16
    lr: float = 2e-4
    min_lr: float = 0.0
    weight_decay: float = 0.05
    warmup_epochs: float = 4.0
    seed: int = 42
    eval_every: int = 20
    eval_batch_size: int | None = None
    image_size: int = 512
    noise_block: str = "published"
    workers: int = 8
    device: str = "auto"
    precision: str = "auto"
    resume: bool = False
    progress: bool = True


def train(settings: TrainSettings) -> dict[str, dict]:
    """Run (or resume) a training run and return the metrics of its last evaluation ({} if none ran)."""
    runtime = start(settings.device, settings.precision)
    try:
        with warnings.catch_warnings():
            # Depthwise-convolution gradients differ from DDP's buckets only in the stride of a size-1
            # dimension, which is the same memory layout, but DDP warns about it once per process.
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides", category=UserWarning)
            return _train(settings, runtime)
    finally:
        stop()


def _train(settings: TrainSettings, runtime: Runtime) -> dict[str, dict]:
    output = Path(settings.output)
    samples = [sample for path in settings.train for sample in read_samples(path)]
    val_sets = read_dataset_specs(settings.val)
    checkpoint = _checkpoint_to_resume(settings, output)

    if checkpoint is None:
        model, sources = _build_model(settings)
        if runtime.is_main:
            write_json(output / RUN_FILE, _run_record(settings, model.config, sources, runtime))
    else:
        run = _check_resumed_settings(settings, output, runtime)
        model = NFAViT(NFAViTConfig.from_dict(run["model"]))
    model.to(runtime.device)

    dataset = ForgeryDataset(samples, model.config.image_size, augment=True, seed=settings.seed)
    sampler = DistributedSampler(dataset, num_replicas=runtime.world_size, rank=runtime.rank, shuffle=True, seed=settings.seed, drop_last=True)
    loader = make_loader(dataset, settings.batch_size, settings.workers, sampler, drop_last=True, pin_memory=runtime.device.type == "cuda")
    if len(loader) == 0:
        raise DetectorError(
            f"the training set has {len(dataset)} images, fewer than one step needs "
            f"({settings.batch_size} per process x {runtime.world_size} processes); lower --batch-size"
        )

    optimizer = torch.optim.AdamW(parameter_groups(model, settings.weight_decay), lr=settings.lr, betas=(0.9, 0.999))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(settings, len(loader)))
    start_epoch, step = 0, 0
    if checkpoint is not None:
        last_epoch, step = load_training_state(checkpoint, model, optimizer, scheduler)
        start_epoch = last_epoch + 1
        if runtime.is_main:
            logger.info("resuming %s after epoch %d (step %d)", output, start_epoch, step)

    trained = model
    if runtime.distributed:
        device_ids = [runtime.device] if runtime.device.type == "cuda" else None
        trained = DistributedDataParallel(model, device_ids=device_ids)
    logs = RunLogs(output, enabled=runtime.is_main)
    results: dict[str, dict] = {}
    try:
        for epoch in range(start_epoch, settings.epochs):
            dataset.epoch = epoch
            sampler.set_epoch(epoch)
            torch.manual_seed(_epoch_seed(settings.seed, epoch, runtime.rank))
            epoch_log, step = _train_epoch(trained, loader, optimizer, scheduler, runtime, epoch, step, settings, logs)
            if runtime.is_main:
                save_checkpoint(output, model, optimizer, scheduler, epoch, step)
                if epoch > 0 and not _is_evaluation_epoch(settings, epoch - 1):
                    remove_checkpoint(output, epoch - 1)
            runtime.barrier()
            # Logged after the checkpoint, so that a resumed run does not log an epoch twice.
            logs.epoch(epoch_log)
            if _is_evaluation_epoch(settings, epoch) and val_sets:
                results = evaluate(model, val_sets, runtime, settings.eval_batch_size or settings.batch_size, settings.workers, settings.progress)
                logs.evaluation(epoch, step, results)
    finally:
        logs.close()
    return results


def _checkpoint_to_resume(settings: TrainSettings, output: Path) -> Path | None:
    checkpoint = latest_checkpoint(output)
    if checkpoint is not None and not settings.resume:
        raise DetectorError(f"{output} already contains a run (newest checkpoint {checkpoint.name}); pass --resume to continue it or choose another --output")
    if checkpoint is None and settings.resume:
        raise DetectorError(f"--resume given, but {output} contains no checkpoint; drop --resume to start a new run")
    return checkpoint


def _build_model(settings: TrainSettings) -> tuple[NFAViT, dict]:
    problems = []
    if settings.noiseprint is None and not settings.random_noise_extractor:
        problems.append(missing_noiseprint_message())
    if settings.mit_init == "imagenet" and (settings.mit_b0 is None or settings.mit_b2 is None):
        problems.append(missing_mit_message())
    if problems:
        raise DetectorError(". ".join(problems))
    return build_pretrained_model(
        settings.mit_b0, settings.mit_b2, settings.noiseprint, settings.random_noise_extractor, seed=settings.seed,
        mit_init=settings.mit_init, image_size=settings.image_size, noise_block=settings.noise_block,
    )


def _run_record(settings: TrainSettings, config: NFAViTConfig, sources: dict, runtime: Runtime) -> dict:
    return {
        "settings": asdict(settings),
        "model": config.to_dict(),
        "sources": sources,
        "world_size": runtime.world_size,
        "device": str(runtime.device),
        "autocast": str(runtime.autocast_dtype) if runtime.autocast_dtype else None,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _check_resumed_settings(settings: TrainSettings, output: Path, runtime: Runtime) -> dict:
    path = output / RUN_FILE
    try:
        run = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DetectorError(f"cannot read {path} ({error}); the run cannot be resumed without it") from None
    current = asdict(settings)
    changed = [f"{key} {run['settings'][key]!r} -> {current[key]!r}" for key in RESULT_SETTINGS if run["settings"].get(key) != current[key]]
    if run.get("world_size") != runtime.world_size:
        changed.append(f"world_size {run.get('world_size')} -> {runtime.world_size}")
    if changed:
        message = f"cannot resume {output} with changed settings ({'; '.join(changed)}); rerun with the original ones or start a new --output"
        if run["settings"].get("epochs") != settings.epochs:
            message += (
                f". A run cannot be extended, because its learning-rate schedule spans all {run['settings'].get('epochs')} epochs: "
                f"start a new run with --epochs {settings.epochs} in another --output"
            )
        raise DetectorError(message)
    return run


def parameter_groups(model: NFAViT, weight_decay: float) -> list[dict]:
    """Split the trainable parameters into weights (with decay) and biases and 1-D parameters (without)."""
    decay, no_decay = [], []
    for name, parameter in model.trainable_parameters():
        (no_decay if parameter.ndim <= 1 or name.endswith(".bias") else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(settings: TrainSettings, steps_per_epoch: int):
    """Return the learning-rate factor of each step: linear warm-up from 0, then a half cosine to min_lr/lr."""
    warmup = settings.warmup_epochs * steps_per_epoch
    total = settings.epochs * steps_per_epoch
    floor = settings.min_lr / settings.lr if settings.lr else 0.0

    def factor(step: int) -> float:
        if step < warmup:
            return step / warmup
        progress = (step - warmup) / max(1.0, total - warmup)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    # Drop-path randomness of one process in one epoch; a resumed run draws the same numbers.
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def _is_evaluation_epoch(settings: TrainSettings, epoch: int) -> bool:
    # Evaluation runs, and the checkpoint is kept, after every eval_every-th epoch and after the last.
    return (epoch + 1) % settings.eval_every == 0 or epoch + 1 == settings.epochs


def _train_epoch(model, loader, optimizer, scheduler, runtime: Runtime, epoch: int, step: int, settings: TrainSettings, logs: RunLogs) -> tuple[dict, int]:
    model.train()
    totals = np.zeros(4)  # loss, segmentation loss, classification loss, images
    started = time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{settings.epochs}", unit="step", disable=not (settings.progress and runtime.is_main), leave=False)
    for batch in bar:
        image = normalize(batch["image"].to(runtime.device, non_blocking=True))
        mask = batch["mask"].to(runtime.device, non_blocking=True)
        label = batch["label"].to(runtime.device, non_blocking=True)
        with runtime.autocast():
            output = model(image)
        loss = nfa_vit_loss(output, mask, label)
        if not torch.isfinite(loss.total):
            raise DetectorError(
                f"the loss is {loss.total.item()} at epoch {epoch + 1}, step {step + 1}; check the training data, "
                "or lower --lr and start a new run in another --output folder"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        step += 1

        batch_size = image.shape[0]
        values = [loss.total.item(), loss.segmentation.item(), loss.classification.item()]
        totals += [value * batch_size for value in values] + [batch_size]
        logs.step(step, values, lr)
        bar.set_postfix(loss=f"{values[0]:.4f}")

    loss_sum, segmentation_sum, classification_sum, images = runtime.sum(totals.tolist())
    seconds = time.perf_counter() - started
    return {
        "epoch": epoch + 1,
        "step": step,
        "lr": lr,
        "loss": loss_sum / images,
        "segmentation_loss": segmentation_sum / images,
        "classification_loss": classification_sum / images,
        "images_per_second": images / seconds,
    }, step


class RunLogs:
    """CSV logs of a run and, when the `tensorboard` package is installed, TensorBoard events.

    Only the main process writes (`enabled`); the other calls do nothing.
    """

    def __init__(self, folder: Path, enabled: bool):
        self.folder = folder
        self.enabled = enabled
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                logger.info("tensorboard is not installed; logging to CSV only (pip install tensorboard, or pip install -e '.[tensorboard]' in a clone of brgen)")
            else:
                self.writer = SummaryWriter(str(folder / "tensorboard"))

    def step(self, step: int, losses: list[float], lr: float) -> None:
        if self.writer is not None:
            for name, value in zip(("loss", "segmentation_loss", "classification_loss"), losses):
                self.writer.add_scalar(f"train/{name}", value, step)
            self.writer.add_scalar("train/lr", lr, step)

    def epoch(self, row: dict) -> None:
        if not self.enabled:
            return
        _append_csv(self.folder / TRAIN_LOG, row)
        logger.info("epoch %d: loss %.4f (segmentation %.4f, classification %.4f), %.1f images/s",
                    row["epoch"], row["loss"], row["segmentation_loss"], row["classification_loss"], row["images_per_second"])

    def evaluation(self, epoch: int, step: int, results: dict[str, dict]) -> None:
        if not self.enabled:
            return
        write_json(self.folder / "eval" / f"{checkpoint_name(epoch)}.json", {"epoch": epoch + 1, "step": step, "datasets": results})
        write_text(self.folder / "eval" / f"{checkpoint_name(epoch)}.md", format_table(results))
        for name, metrics in results.items():
            _append_csv(self.folder / EVAL_LOG, {"epoch": epoch + 1, "step": step, "dataset": name, **metrics})
            if self.writer is not None:
                for key, value in metrics.items():
                    if value is not None:
                        self.writer.add_scalar(f"eval/{name}/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow({key: "" if value is None else value for key, value in row.items()})
