"""`brgen train-detector` and `brgen eval-detector` end to end on a tiny NFA-ViT and a tiny dataset."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from detector_helpers import make_release_folder, save_tiny_mit_folders, save_tiny_noiseprint, write_json_list
from test_pipeline import run_cli


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("detector")
    noise, image = save_tiny_mit_folders(folder)
    noiseprint = save_tiny_noiseprint(folder / "noiseprint++.th")
    release = make_release_folder(folder / "val", count=4)
    train_list = write_json_list(release, folder / "br-gen_train.json")
    return {"folder": folder, "mit_b0": noise, "mit_b2": image, "noiseprint": noiseprint, "release": release, "train": train_list}


def train_arguments(inputs, output, *extra):
    return [
        "train-detector", "--train", str(inputs["train"]), "--val", f"stuff={inputs['release']}", "--output", str(output),
        "--mit-b0", str(inputs["mit_b0"]), "--mit-b2", str(inputs["mit_b2"]), "--noiseprint", str(inputs["noiseprint"]),
        "--image-size", "64", "--batch-size", "8", "--lr", "1e-3", "--warmup-epochs", "0", "--workers", "0", "--no-progress", *extra,
    ]


def without_weight_options(arguments):
    """Drop --mit-b0, --mit-b2 and --noiseprint and their values from a train-detector command line."""
    kept = list(arguments)
    for option in ("--mit-b0", "--mit-b2", "--noiseprint"):
        index = kept.index(option)
        del kept[index : index + 2]
    return kept


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def trained_run(inputs):
    # 8 images, 8 per step: one step per epoch.
    output = inputs["folder"] / "run"
    assert run_cli(*train_arguments(inputs, output, "--epochs", "3", "--eval-every", "2")) == 0
    return output


def test_training_loss_drops(trained_run):
    losses = [float(row["loss"]) for row in read_csv(trained_run / "train_log.csv")]
    assert len(losses) == 3
    assert losses[2] < losses[1] < losses[0]


def test_run_records_sources(trained_run, inputs):
    run = json.loads((trained_run / "run.json").read_text())
    assert run["world_size"] == 1
    assert run["sources"]["noise_extractor"]["file"] == str(inputs["noiseprint"].resolve())
    assert run["model"]["extractor_depth"] == 3
    assert run["settings"]["epochs"] == 3


def test_run_files_follow_umask(trained_run):
    umask = os.umask(0)
    os.umask(umask)
    expected = 0o666 & ~umask
    names = ["run.json", "checkpoints/latest.json", "eval/epoch-0003.json", "train_log.csv"]
    names += [f"checkpoints/epoch-0003/{name}" for name in ("model.safetensors", "config.json", "training_state.pt")]
    for name in names:
        assert (trained_run / name).stat().st_mode & 0o777 == expected, name


def test_checkpoints_kept_at_evaluations(trained_run):
    folders = sorted(path.name for path in (trained_run / "checkpoints").iterdir())
    assert folders == ["epoch-0002", "epoch-0003", "latest.json"]
    assert json.loads((trained_run / "checkpoints" / "latest.json").read_text())["checkpoint"] == "epoch-0003"


def test_evaluations_logged(trained_run):
    rows = read_csv(trained_run / "eval_log.csv")
    assert [(row["epoch"], row["dataset"], row["images"], row["forged_images"]) for row in rows] == [("2", "stuff", "8", "4"), ("3", "stuff", "8", "4")]
    assert (trained_run / "eval" / "epoch-0003.md").read_text().startswith("| dataset |")


def test_resume_reproduces_uninterrupted_run(trained_run, inputs):
    interrupted = inputs["folder"] / "interrupted"
    shutil.copytree(trained_run, interrupted)
    shutil.rmtree(interrupted / "checkpoints" / "epoch-0003")
    (interrupted / "checkpoints" / "latest.json").write_text(json.dumps({"checkpoint": "epoch-0002", "epoch": 1, "step": 2}))
    assert run_cli(*train_arguments(inputs, interrupted, "--epochs", "3", "--eval-every", "2", "--resume")) == 0

    resumed = load_file(interrupted / "checkpoints" / "epoch-0003" / "model.safetensors")
    uninterrupted = load_file(trained_run / "checkpoints" / "epoch-0003" / "model.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    assert all((resumed[name] == uninterrupted[name]).all() for name in resumed)


def test_existing_run_needs_resume(trained_run, inputs, capsys):
    assert run_cli(*train_arguments(inputs, trained_run, "--epochs", "3")) == 2
    assert "pass --resume" in capsys.readouterr().err


def test_resume_rejects_changed_settings(trained_run, inputs, capsys):
    assert run_cli(*train_arguments(inputs, trained_run, "--epochs", "3", "--lr", "5e-4", "--resume")) == 2
    assert "lr 0.001 -> 0.0005" in capsys.readouterr().err


def test_training_needs_noiseprint(inputs, tmp_path, capsys):
    arguments = train_arguments(inputs, tmp_path / "run", "--epochs", "1")
    index = arguments.index("--noiseprint")
    del arguments[index : index + 2]
    assert run_cli(*arguments) == 2
    assert "--random-noise-extractor" in capsys.readouterr().err


def test_eval_detector_writes_metrics(trained_run, inputs):
    output = inputs["folder"] / "val-metrics"
    assert run_cli("eval-detector", "--checkpoint", str(trained_run), "--data", f"stuff={inputs['release']}", "--data", str(inputs["train"]),
                   "--output", str(output), "--workers", "0", "--no-progress") == 0
    report = json.loads((output / "metrics.json").read_text())
    during_training = json.loads((trained_run / "eval" / "epoch-0003.json").read_text())["datasets"]["stuff"]
    assert list(report["datasets"]) == ["stuff", "br-gen_train"]
    assert report["datasets"]["stuff"] == pytest.approx(during_training, abs=1e-6)
    assert (output / "metrics.md").read_text().count("\n") == 4


def test_torchrun_two_processes(inputs, tmp_path):
    output = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "brgen_build",
               *train_arguments(inputs, output, "--epochs", "1")]
    command[command.index("--batch-size") + 1] = "4"
    result = subprocess.run(command, capture_output=True, text=True, timeout=170, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]

    run = json.loads((output / "run.json").read_text())
    assert run["world_size"] == 2
    rows = read_csv(output / "train_log.csv")
    # 8 images, 4 per process and step, 2 processes: one step per epoch.
    assert [row["step"] for row in rows] == ["1"]

    distributed = json.loads((output / "eval" / "epoch-0001.json").read_text())["datasets"]["stuff"]
    assert distributed["images"] == 8
    single = tmp_path / "single"
    assert run_cli("eval-detector", "--checkpoint", str(output), "--data", f"stuff={inputs['release']}", "--output", str(single),
                   "--workers", "0", "--no-progress") == 0
    assert json.loads((single / "metrics.json").read_text())["datasets"]["stuff"] == pytest.approx(distributed, abs=1e-6)


def test_cli_choices_match_detector():
    from brgen_build import detector_commands
    from detector import config, distributed

    assert detector_commands.NOISE_BLOCKS == config.NOISE_BLOCKS
    assert detector_commands.PRECISIONS == distributed.PRECISIONS
    assert detector_commands.MIT_INITS == config.MIT_INITS


def test_missing_weights_reported_together(inputs, tmp_path, capsys):
    folder = Path(os.environ["BRGEN_WEIGHTS_DIR"]) / "nfa-vit"
    assert run_cli(*without_weight_options(train_arguments(inputs, tmp_path / "run", "--epochs", "1"))) == 2
    error = capsys.readouterr().err
    assert f"--mit-b0: config.json, *model.* not found at {folder / 'mit-b0'} (the weights folder; --mit-b0 and $BRGEN_MIT_B0 are not set)" in error
    assert f"--mit-b2: config.json, *model.* not found at {folder / 'mit-b2'}" in error
    assert f"--noiseprint: noiseprint++.th not found at {folder / 'noiseprint++.th'}" in error
    assert "fetch it with `brgen weights fetch nfa-vit`" in error
    assert "download it by hand from https://github.com/grip-unina/TruFor/" in error
    assert "--mit-init random" in error
    assert "--random-noise-extractor" in error
    assert not (tmp_path / "run").exists()


def test_weights_found_in_folder_and_variable(inputs, tmp_path, monkeypatch):
    folder = Path(os.environ["BRGEN_WEIGHTS_DIR"]) / "nfa-vit"
    shutil.copytree(inputs["mit_b0"], folder / "mit-b0")
    shutil.copytree(inputs["mit_b2"], folder / "mit-b2")
    monkeypatch.setenv("BRGEN_NOISEPRINT", str(inputs["noiseprint"]))
    output = tmp_path / "run"
    assert run_cli(*without_weight_options(train_arguments(inputs, output, "--epochs", "1"))) == 0
    sources = json.loads((output / "run.json").read_text())["sources"]
    assert sources["mit_b0"]["path"] == str((folder / "mit-b0").resolve())
    assert sources["mit_b2"]["path"] == str((folder / "mit-b2").resolve())
    assert sources["noise_extractor"]["file"] == str(inputs["noiseprint"].resolve())


def test_variable_pointing_nowhere_is_named(inputs, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BRGEN_MIT_B2", str(tmp_path / "nope"))
    arguments = train_arguments(inputs, tmp_path / "run", "--epochs", "1")
    index = arguments.index("--mit-b2")
    del arguments[index : index + 2]
    assert run_cli(*arguments) == 2
    error = capsys.readouterr().err
    assert f"--mit-b2: config.json, *model.* not found at {tmp_path / 'nope'} (from $BRGEN_MIT_B2)" in error
    assert "correct $BRGEN_MIT_B2 or unset it" in error
    assert "--mit-b0:" not in error


def test_resume_needs_no_weight_options(trained_run, inputs):
    arguments = without_weight_options(train_arguments(inputs, trained_run, "--epochs", "3", "--eval-every", "2", "--resume"))
    assert run_cli(*arguments) == 0


def test_random_mit_init_trains_without_mit_weights(inputs, tmp_path):
    output = tmp_path / "run"
    arguments = without_weight_options(train_arguments(inputs, output, "--epochs", "1", "--eval-every", "5"))
    assert run_cli(*arguments, "--mit-init", "random", "--random-noise-extractor") == 0
    run = json.loads((output / "run.json").read_text())
    assert run["settings"]["mit_init"] == "random"
    assert run["sources"]["mit_b0"]["source"] == "random-init"
    assert run["sources"]["mit_b2"]["source"] == "random-init"
    assert run["model"]["noise_branch"]["hidden_sizes"] == [32, 64, 160, 256]
    assert run["model"]["image_branch"]["hidden_sizes"] == [64, 128, 320, 512]
    assert len(read_csv(output / "train_log.csv")) == 1


def test_random_mit_init_rejects_mit_options(inputs, tmp_path, capsys):
    arguments = train_arguments(inputs, tmp_path / "run", "--epochs", "1", "--mit-init", "random")
    assert run_cli(*arguments) == 2
    assert "--mit-b0 and --mit-b2 are not used with --mit-init random" in capsys.readouterr().err


def help_text(command: str, capsys) -> str:
    assert run_cli(command, "--help") == 0
    return " ".join(capsys.readouterr().out.split())


def test_eval_help_mentions_no_epochs(capsys):
    text = help_text("eval-detector", capsys)
    assert "each epoch" not in text
    assert "--data [NAME=]PATH" in text


def test_train_help_shows_path_metavars(capsys):
    text = help_text("train-detector", capsys)
    assert "--train PATH" in text
    assert "--val [NAME=]PATH" in text
    assert "--mit-b0 PATH" in text
    assert "--mit-b2 PATH" in text
    assert "--noiseprint FILE" in text
    assert "start a new run with the larger --epochs" in text


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--train", "nope.json", "Invalid value for '--train': Path"),
        ("--val", "stuff=nope", "Invalid value for '--val': Path"),
        ("--mit-b0", "nope", "Invalid value for '--mit-b0': Path"),
        ("--noiseprint", ".", "Invalid value for '--noiseprint': File"),
    ],
)
def test_wrong_paths_get_click_errors(inputs, tmp_path, capsys, monkeypatch, option, value, message):
    monkeypatch.chdir(tmp_path)
    arguments = train_arguments(inputs, tmp_path / "run", "--epochs", "1")
    arguments[arguments.index(option) + 1] = value
    assert run_cli(*arguments) == 2
    error = capsys.readouterr().err
    assert message in error
    assert "Traceback" not in error


def test_resume_with_more_epochs_explains_new_run(trained_run, inputs, capsys):
    assert run_cli(*train_arguments(inputs, trained_run, "--epochs", "5", "--eval-every", "2", "--resume")) == 2
    error = capsys.readouterr().err
    assert "epochs 3 -> 5" in error
    assert "cannot be extended" in error
    assert "start a new run with --epochs 5 in another --output" in error
