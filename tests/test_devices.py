"""Device strings from the command line and the recipe: every model-running command rejects an invalid or
unavailable device with a message that names the value, before it loads any weights.

torch.cuda is patched where a test needs a machine with or without GPUs, so the tests give the same
result on CPU-only and GPU machines.
"""

import logging

import pytest
import torch

from brgen_build.errors import BrgenError
from brgen_build.model_checks import check_device
from conftest import sample_recipe_data, write_recipe
from inpainters.base import MethodError
from inpainters.opencv_telea import OpenCVTelea
from inpainters.quality.base import ScorerError
from inpainters.quality.brisque import Brisque
from inpainters.quality.clip_score import ClipScore
from mask_gen.segmenters.common import resolve_device as resolve_segmenter_device
from mask_gen.segmenters.spec import SegmenterSpec
from test_pipeline import run_cli

# The LaMa tests save a TorchScript file, which torch 2.10+ marks as deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("LOCAL_RANK", raising=False)


@pytest.fixture
def lama_recipe(tmp_path):
    path = tmp_path / "big-lama.pt"
    torch.jit.script(torch.nn.Identity()).save(str(path))
    data = sample_recipe_data()
    data["methods"] = {"lama": {"weights": str(path)}, "opencv-telea": {}}
    return write_recipe(tmp_path, data), path


def test_invalid_device_names_value_and_choices():
    with pytest.raises(BrgenError) as raised:
        check_device("gpu")
    assert "invalid device 'gpu'" in str(raised.value)
    assert "auto, cpu, cuda or cuda:N" in str(raised.value)


def test_unsupported_device_type_rejected():
    with pytest.raises(BrgenError, match="device 'meta' is not supported"):
        check_device("meta")


def test_cuda_without_gpu_rejected(no_gpu):
    with pytest.raises(BrgenError, match="device 'cuda:0' requested, but"):
        check_device("cuda:0")


def test_gpu_index_beyond_visible_rejected(two_gpus):
    with pytest.raises(BrgenError) as raised:
        check_device("cuda:2")
    assert "sees 2 GPU(s), cuda:0 to cuda:1" in str(raised.value)


@pytest.mark.parametrize(("device", "expected"), [("cuda:1", "cuda:1"), ("cuda", "cuda"), ("auto", "cuda"), ("cpu", "cpu")])
def test_valid_devices_pass(two_gpus, device, expected):
    assert check_device(device) == expected


def test_auto_without_gpu_is_cpu(no_gpu):
    assert check_device("auto") == "cpu"


def test_caller_error_type_and_prefix():
    with pytest.raises(ScorerError, match="^clip-score: invalid device"):
        check_device("gpu", ScorerError, "clip-score")


@pytest.mark.parametrize(("device", "message"), [("gpu", "lama: invalid device 'gpu'"), ("cuda", "lama: device 'cuda' requested, but")])
def test_inpaint_rejects_device_before_weights(lama_recipe, tmp_path, capsys, no_gpu, device, message):
    recipe, weights = lama_recipe
    code = run_cli("inpaint", "--method", "lama", "--weights", str(weights), "--device", device,
                   "--root", str(tmp_path / "root"), "--recipe", str(recipe), "--no-progress")
    error = capsys.readouterr().err
    assert code == 2
    assert message in error
    assert "TorchScript" not in error


def test_opencv_telea_rejects_invalid_device():
    with pytest.raises(MethodError, match="opencv-telea: invalid device 'gpu'"):
        OpenCVTelea({}, device="gpu")


def test_opencv_telea_warns_that_it_ignores_gpu(two_gpus, caplog):
    with caplog.at_level(logging.WARNING, logger="inpainters.opencv_telea"):
        method = OpenCVTelea({"device": "cuda:1"})
    assert method.device == "cpu"
    assert "runs on the CPU only; ignoring device cuda:1" in caplog.text


def test_opencv_telea_auto_is_silent_cpu(two_gpus, caplog):
    with caplog.at_level(logging.WARNING, logger="inpainters.opencv_telea"):
        method = OpenCVTelea({})
    assert method.device == "cpu"
    assert caplog.text == ""


def test_scorers_reject_invalid_device():
    with pytest.raises(ScorerError, match="clip-score: invalid device 'gpu'"):
        ClipScore({}, device="gpu")
    with pytest.raises(ScorerError, match="brisque: invalid device 'gpu'"):
        Brisque({}, device="gpu")


def test_segmenter_rejects_invalid_device():
    spec = SegmenterSpec(backend="mask2former", weights={}, device="gpu")
    with pytest.raises(BrgenError, match="masks: invalid device 'gpu'"):
        resolve_segmenter_device(spec)


def test_segmenter_rejects_cuda_without_gpu(no_gpu):
    spec = SegmenterSpec(backend="mask2former", weights={}, device="cuda")
    with pytest.raises(BrgenError, match="masks: device 'cuda' requested, but"):
        resolve_segmenter_device(spec)


@pytest.mark.parametrize("command", ["eval-detector", "train-detector"])
def test_detector_commands_reject_invalid_device(command, tmp_path, capsys):
    data = tmp_path / "data.json"
    data.write_text("[]")
    if command == "eval-detector":
        arguments = ["eval-detector", "--checkpoint", str(tmp_path), "--data", str(data)]
    else:
        arguments = ["train-detector", "--train", str(data), "--random-noise-extractor"]
    code = run_cli(*arguments, "--output", str(tmp_path / "out"), "--device", "gpu", "--no-progress")
    error = capsys.readouterr().err
    assert code == 2
    assert "invalid device 'gpu'" in error
    assert "Traceback" not in error
