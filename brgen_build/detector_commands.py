"""`brgen train-detector` and `brgen eval-detector`: train NFA-ViT on a dataset and score it per validation set.

The detector package is imported inside the commands, so other brgen commands start without loading it.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from brgen_build.errors import BrgenError
from brgen_build.model_checks import check_device

# The same choices as detector.distributed.PRECISIONS, detector.config.NOISE_BLOCKS and
# detector.config.MIT_INITS, repeated here so that building the CLI does not import torch and transformers.
PRECISIONS = ("auto", "bf16", "fp32")
NOISE_BLOCKS = ("published", "standard")
MIT_INITS = ("imagenet", "random")
# Command-line option of each registry component of `nfa-vit` (manifests/weights.yaml).
WEIGHT_OPTIONS = {"mit_b0": "--mit-b0", "mit_b2": "--mit-b2", "noiseprint": "--noiseprint"}

device_option = click.option(
    "--device", default="auto", show_default=True,
    help="Torch device: auto (a GPU when one is visible), cpu, cuda, cuda:1. Under torchrun each process takes the GPU of its LOCAL_RANK.",
)
precision_option = click.option(
    "--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
    help="auto: bf16 autocast on GPUs, float32 on CPUs.",
)
workers_option = click.option("--workers", type=click.IntRange(min=0), default=8, show_default=True, help="Data-loading processes per training process.")
existing_path = click.Path(exists=True, path_type=str)


class DatasetSpec(click.ParamType):
    """A dataset given as NAME=PATH or PATH, whose PATH must exist; the value stays the text given."""

    name = "dataset"

    def get_metavar(self, param, ctx=None) -> str:
        return "[NAME=]PATH"

    def convert(self, value, param, ctx):
        name, separator, location = str(value).partition("=")
        existing_path.convert(location if separator else name, param, ctx)
        return value


dataset_spec = DatasetSpec()


def resolve_weights(given: dict[str, str | None], needed: list[str]) -> dict[str, str | None]:
    """Find NFA-ViT's initial weights through the weight registry; return {component: path or None}.

    Each component in `needed` is looked for as the registry defines: its option's value, else its
    environment variable, else the weights folder. A component not in `needed` keeps its given value.

    Raises:
        BrgenError: one or more needed components are missing. The message lists each of them with the
            path looked at, what chose that path and what to do.
    """
    from inpainters import weights as registry

    paths = dict(given)
    problems = []
    for name in needed:
        entry = registry.component("nfa-vit", name)
        path, found_by = registry.locate(entry, given[name])
        missing = entry.missing_files(path)
        if not missing:
            paths[name] = str(path)
            continue
        option = WEIGHT_OPTIONS[name]
        if found_by == registry.WEIGHTS_FOLDER:
            chosen_by = f"the weights folder; {option} and ${entry.env} are not set"
        else:
            chosen_by = f"from {found_by if found_by.startswith('$') else option}"
        problems.append(
            f"- {option}: {', '.join(missing)} not found at {path} ({chosen_by}). It is the {entry.description}; "
            f"{registry.missing_advice(entry, found_by)}"
        )
    if problems:
        raise BrgenError(
            "NFA-ViT's initial weights are missing:\n" + "\n".join(problems) + "\n"
            "To try training without them, --mit-init random starts the MiT branches from a random initialisation "
            "and --random-noise-extractor keeps the noise extractor random; results are then not comparable with BR-Gen's."
        )
    return paths


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


@click.command(name="train-detector")
@click.option("--train", "train_paths", multiple=True, required=True, type=existing_path, help="Training set: an IMDLBenCo JSON list or a release folder with Au/, Tp/ and Gt/. Repeat to combine sets.")
@click.option("--val", "val_specs", multiple=True, type=dataset_spec, help="Validation set as NAME=PATH or PATH: a JSON list, a release folder, or an IMDLBenCo test-set JSON {name: path}. Repeat for several sets.")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="Run folder for checkpoints, logs and metrics.")
@click.option("--mit-b0", type=existing_path, default=None, help="ImageNet MiT-b0 for the noise branch: a local nvidia/mit-b0 folder or an original mit_b0.pth. Default: $BRGEN_MIT_B0, else WEIGHTS/nfa-vit/mit-b0 (WEIGHTS: $BRGEN_WEIGHTS_DIR, default $HF_HOME/brgen); `brgen weights fetch nfa-vit` puts it there.")
@click.option("--mit-b2", type=existing_path, default=None, help="ImageNet MiT-b2 for the image branch: a local nvidia/mit-b2 folder or an original mit_b2.pth. Default: $BRGEN_MIT_B2, else WEIGHTS/nfa-vit/mit-b2.")
@click.option("--noiseprint", type=click.Path(exists=True, dir_okay=False, path_type=str), default=None, help="Noiseprint++ weights (TruFor's noiseprint++.th or BR-Gen's noiseprint.pth; non-commercial licence). Default: $BRGEN_NOISEPRINT, else WEIGHTS/nfa-vit/noiseprint++.th.")
@click.option("--random-noise-extractor", is_flag=True, help="Train without Noiseprint++: the noise extractor keeps a seeded random initialisation. It gets no gradient in NFA-ViT, so it never learns; run.json records this.")
@click.option("--mit-init", type=click.Choice(MIT_INITS), default="imagenet", show_default=True, help="imagenet: start both MiT branches from --mit-b0 and --mit-b2, as the published run. random: start them from a seeded random initialisation and need no MiT weights, for trying training; results are not comparable with BR-Gen's. run.json records it.")
@click.option("--epochs", type=click.IntRange(min=1), default=200, show_default=True, help="Training epochs.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True, help="Images per process and step.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-4, show_default=True, help="Peak learning rate, reached after the warm-up.")
@click.option("--min-lr", type=click.FloatRange(min=0), default=0.0, show_default=True, help="Learning rate at the end of the cosine decay.")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.05, show_default=True, help="AdamW weight decay of weight matrices and kernels (biases and norms get none).")
@click.option("--warmup-epochs", type=click.FloatRange(min=0), default=4.0, show_default=True, help="Epochs of linear learning-rate warm-up.")
@click.option("--seed", type=int, default=42, show_default=True, help="Seed of initialisation, shuffling, augmentation and drop path.")
@click.option("--eval-every", type=click.IntRange(min=1), default=20, show_default=True, help="Evaluate on the --val sets, and keep the checkpoint, every N epochs and after the last.")
@click.option("--eval-batch-size", type=click.IntRange(min=1), default=None, help="Images per process in evaluation. Default: --batch-size.")
@click.option("--image-size", type=click.IntRange(min=64), default=512, show_default=True, help="Side of the square network input in pixels, a multiple of 32.")
@click.option("--noise-block", type=click.Choice(NOISE_BLOCKS), default="published", show_default=True, help="published: the noise branch's blocks as in the published NFA-ViT code; standard: ordinary MiT blocks.")
@workers_option
@device_option
@precision_option
@click.option(
    "--resume", is_flag=True,
    help="Continue the run in --output from its newest checkpoint. Settings that change the result (training data, epochs, "
    "batch size, learning rates, weight decay, warm-up, seed, image size, noise block, number of processes) must equal "
    "the run's, because the learning-rate schedule spans all epochs. To train for more epochs, start a new run with the "
    "larger --epochs in another --output.",
)
@click.option("--no-progress", is_flag=True, help="Hide progress bars (logs still show each epoch).")
def train_detector(train_paths, val_specs, output, mit_b0, mit_b2, noiseprint, random_noise_extractor, mit_init, epochs, batch_size, lr, min_lr,
                   weight_decay, warmup_epochs, seed, eval_every, eval_batch_size, image_size, noise_block, workers, device, precision,
                   resume, no_progress) -> None:
    """Train the NFA-ViT detector from ImageNet MiT weights and Noiseprint++.

    The defaults are the published BR-Gen run: AdamW, lr 2e-4 with 4 warm-up epochs and a cosine decay,
    200 epochs, 16 images per GPU, 512x512 inputs. For several GPUs start it with torchrun.

    \b
    Examples:
      brgen train-detector --train export/br-gen_train.json --val stuff=export/stuff_val.json \\
          --mit-b0 weights/mit-b0 --mit-b2 weights/mit-b2 --noiseprint weights/noiseprint++.th -o runs/nfa-vit
      torchrun --nproc_per_node 4 --no-python brgen train-detector ... -o runs/nfa-vit
    """
    check_device(device)
    if mit_init == "random" and (mit_b0 or mit_b2):
        raise click.UsageError("--mit-b0 and --mit-b2 are not used with --mit-init random; drop them or the --mit-init option")
    weights = {"mit_b0": mit_b0, "mit_b2": mit_b2, "noiseprint": noiseprint}
    if not resume:
        # A resumed run takes its weights from the checkpoint.
        needed = ["mit_b0", "mit_b2"] if mit_init == "imagenet" else []
        if noiseprint or not random_noise_extractor:
            needed.append("noiseprint")
        weights = resolve_weights(weights, needed)
    from detector.evaluate import format_table
    from detector.train import TrainSettings, train

    settings = TrainSettings(
        # Absolute paths, so that a resumed run started from another folder matches run.json.
        train=[str(Path(path).resolve()) for path in train_paths],
        val=list(val_specs),
        output=output,
        mit_b0=weights["mit_b0"],
        mit_b2=weights["mit_b2"],
        noiseprint=weights["noiseprint"],
        random_noise_extractor=random_noise_extractor,
        mit_init=mit_init,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        min_lr=min_lr,
        weight_decay=weight_decay,
        warmup_epochs=warmup_epochs,
        seed=seed,
        eval_every=eval_every,
        eval_batch_size=eval_batch_size,
        image_size=image_size,
        noise_block=noise_block,
        workers=workers,
        device=device,
        precision=precision,
        resume=resume,
        progress=not no_progress,
    )
    results = train(settings)
    if results and _is_main_process():
        click.echo(format_table(results))
    if _is_main_process():
        click.echo(f"run folder: {output}")


@click.command(name="eval-detector")
@click.option("--checkpoint", required=True, type=click.Path(exists=True), help="A run folder (its newest checkpoint), a checkpoint folder, or a published NFA-ViT .pth state dict.")
@click.option("--data", "data_specs", multiple=True, required=True, type=dataset_spec, help="Dataset as NAME=PATH or PATH: a JSON list, a release folder, or an IMDLBenCo test-set JSON {name: path}. Repeat for several sets.")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="Folder for metrics.json and metrics.md.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True, help="Images per process and forward pass.")
@click.option("--workers", type=click.IntRange(min=0), default=4, show_default=True, help="Data-loading processes per process.")
@device_option
@precision_option
@click.option("--no-progress", is_flag=True, help="Hide progress bars (logs still show each dataset's metrics).")
def eval_detector(checkpoint, data_specs, output, batch_size, workers, device, precision, no_progress) -> None:
    """Score an NFA-ViT checkpoint on each dataset: pixel F1, IoU and AUC, image accuracy, AUC, AP and F1.

    Pixel metrics threshold the localisation map at 0.5 at the network's input size, and they average over
    the images that have a forged region. Image metrics use the detection score. The command writes
    metrics.json and a Markdown table.

    \b
    Example:
      brgen eval-detector --checkpoint runs/nfa-vit --data stuff=export/stuff_val.json \\
          --data background=export/background_val.json --data real=export/real_val.json -o runs/nfa-vit/val
    """
    check_device(device)
    from detector.evaluate import format_table, run_evaluation

    results = run_evaluation(checkpoint, list(data_specs), output, batch_size, workers, device, precision, progress=not no_progress)
    if _is_main_process():
        click.echo(format_table(results))
        click.echo(f"metrics: {Path(output) / 'metrics.json'}")
