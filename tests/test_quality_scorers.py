"""The quality scorers' real code: BRISQUE with the LIVE model the `brisque` package ships, CLIP score and
embedding distance on tiny random transformers models saved to a temporary folder."""

import pickle

import numpy as np
import pytest
import torch
import transformers

from conftest import SAMPLE_DIR
from inpainters.quality import registry
from inpainters.quality.base import ScoreSample, ScorerError, crop_sample
from inpainters.quality.brisque import (
    Brisque,
    BrisqueModel,
    brisque_features,
    fit_aggd,
    fit_ggd,
    installed_model_folder,
    matlab_halve,
    read_feature_ranges,
)
from inpainters.quality.clip_score import ClipScore
from inpainters.quality.embedding_distance import EmbeddingDistance
from tiny_scorer_models import save_tiny_clip, save_tiny_dino


@pytest.fixture(scope="module")
def brisque():
    scorer = Brisque({}, device="cpu")
    scorer.check()
    scorer.load()
    return scorer


@pytest.fixture(scope="module")
def sample_photo():
    from PIL import Image

    with Image.open(SAMPLE_DIR / "images" / "000000142238.jpg") as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    # Seed 1 gives positive cosines for the samples below, so the clamp at 0 does not hide the value.
    return save_tiny_clip(tmp_path_factory.mktemp("clip"), seed=1)


@pytest.fixture(scope="module")
def dino_folder(tmp_path_factory):
    return save_tiny_dino(tmp_path_factory.mktemp("dino"))


def whole(name, forgery, real=None, prompt=""):
    real = forgery if real is None else real
    return ScoreSample(name, forgery, real, np.ones(forgery.shape[:2], bool), prompt)


def test_brisque_model_is_the_live_release(brisque):
    assert brisque.model.support_vectors.shape == (770, 36)
    assert brisque.model.gamma == 0.05
    assert brisque.model.rho == -155.845


def test_brisque_matches_matlab_release_on_camera(brisque):
    import skimage.data

    # -13.7084 is what an independent port of the MATLAB release reports for scikit-image's `camera`.
    score = brisque.model.predict(brisque_features(skimage.data.camera()))
    assert score == pytest.approx(-13.7084, abs=1e-3)


def test_brisque_sample_photo_value(brisque, sample_photo):
    assert brisque.score([whole("real", sample_photo)])[0] == pytest.approx(32.2712, abs=1e-3)


def test_brisque_rises_with_blur_and_noise(brisque, sample_photo):
    import cv2

    rng = np.random.default_rng(0)
    noisy = np.clip(sample_photo + rng.normal(0, 25, sample_photo.shape), 0, 255).astype(np.uint8)
    blurred = cv2.GaussianBlur(sample_photo, (0, 0), 3)
    real, noise, blur = brisque.score([whole("real", sample_photo), whole("noise", noisy), whole("blur", blurred)])
    assert noise > real + 20
    assert blur > real + 20


def test_brisque_flat_image_is_undefined(brisque):
    assert brisque.score([whole("flat", np.full((64, 64, 3), 90, np.uint8))]) == [None]


def test_shape_fits_recover_known_distributions():
    rng = np.random.default_rng(1)
    gaussian_shape, gaussian_variance = fit_ggd(rng.normal(0, 2, 200_000))
    assert gaussian_shape == pytest.approx(2.0, abs=0.03)
    assert gaussian_variance == pytest.approx(4.0, rel=0.01)
    laplace_shape, _ = fit_ggd(rng.laplace(0, 1, 200_000))
    assert laplace_shape == pytest.approx(1.0, abs=0.03)
    shape, mean, left, right = fit_aggd(np.array([-2.0, -1.0, 0.0, 1.0, 2.0, 3.0]))
    assert left == pytest.approx(2.5)
    assert right == pytest.approx(14 / 3)


def test_matlab_halve_sizes_and_constants():
    halved = matlab_halve(np.full((7, 10), 50.0))
    assert halved.shape == (4, 5)
    assert np.allclose(halved, 50.0)
    ramp = matlab_halve(np.tile(np.arange(32, dtype=np.float64), (8, 1)))
    # Output pixel i is centred on input 2i + 0.5; the cubic kernel keeps a ramp linear where it does not reach the mirrored edges.
    assert ramp[0, 3:13] == pytest.approx(2 * np.arange(3, 13) + 0.5, abs=1e-9)


def test_range_file_with_code_is_rejected(tmp_path):
    path = tmp_path / "normalize.pickle"
    path.write_bytes(pickle.dumps({"min_": [0.0], "max_": [1.0], "call": print}))
    with pytest.raises(ScorerError, match="is not a range file"):
        read_feature_ranges(path)


def test_brisque_missing_folder_names_origin(tmp_path, monkeypatch):
    monkeypatch.setenv("BRGEN_BRISQUE_WEIGHTS", str(tmp_path / "absent"))
    with pytest.raises(ScorerError) as error:
        Brisque({}).check()
    message = str(error.value)
    assert f"{tmp_path / 'absent'} (from $BRGEN_BRISQUE_WEIGHTS: not a folder)" in message
    assert "PyPI package `brisque`" in message


def test_brisque_reads_a_copied_model_folder(tmp_path, monkeypatch):
    for name in ("svm.txt", "normalize.pickle"):
        (tmp_path / name).write_bytes((installed_model_folder() / name).read_bytes())
    monkeypatch.setenv("BRGEN_WEIGHTS_DIR", str(tmp_path.parent))
    (tmp_path.parent / "brisque").mkdir(exist_ok=True)
    scorer = Brisque({"weights": str(tmp_path)})
    scorer.check()
    assert scorer.folder == tmp_path
    assert BrisqueModel.from_folder(scorer.folder).support_vectors.shape == (770, 36)


def test_clip_score_equals_clip_logits(clip_folder):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8), np.full((30, 20, 3), 100, np.uint8)]
    prompts = ["a photo of sky", "grass"]
    scorer = ClipScore({"weights": str(clip_folder)}, device="cpu")
    scorer.check()
    scorer.load()
    scores = scorer.score([whole("a", images[0], prompt=prompts[0]), whole("b", images[1], prompt=prompts[1])])

    model = transformers.CLIPModel.from_pretrained(clip_folder, local_files_only=True).eval()
    processor = transformers.CLIPProcessor.from_pretrained(clip_folder, local_files_only=True)
    inputs = processor(text=prompts, images=images, return_tensors="pt", padding=True)
    with torch.no_grad():
        output = model(**inputs)
    cosines = torch.diagonal(output.logits_per_image) / model.logit_scale.exp()
    expected = (100 * cosines.clamp(min=0)).tolist()
    assert scores[0] > 0
    assert scores == pytest.approx(expected, abs=1e-3)


def test_clip_score_missing_folder_fails(tmp_path, monkeypatch):
    monkeypatch.delenv("BRGEN_CLIP_SCORE_WEIGHTS", raising=False)
    monkeypatch.setenv("BRGEN_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(ScorerError) as error:
        ClipScore({}).check()
    message = str(error.value)
    assert f"{tmp_path / 'clip-score'} (from $BRGEN_WEIGHTS_DIR: not a folder)" in message
    assert "openai/clip-vit-large-patch14" in message
    assert "`hf download openai/clip-vit-large-patch14 --local-dir FOLDER`" in message


@pytest.mark.parametrize("backbone", ["dino", "clip"])
def test_embedding_distance_real_backbones(backbone, dino_folder, clip_folder):
    folder = dino_folder if backbone == "dino" else clip_folder
    rng = np.random.default_rng(2)
    real = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    changed = real.copy()
    changed[10:30, 5:35] = 255 - changed[10:30, 5:35]
    scorer = EmbeddingDistance({"weights": str(folder)}, device="cpu")
    scorer.check()
    scorer.load()
    same, different = scorer.score([whole("same", real, real), whole("changed", changed, real)])
    assert same == pytest.approx(0.0, abs=1e-5)
    assert different > 1e-4
    assert scorer.checkpoint()["model_type"] == ("vit" if backbone == "dino" else "clip")


def test_embedding_distance_dino_uses_cls_token(dino_folder):
    rng = np.random.default_rng(3)
    real, forgery = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    scorer = EmbeddingDistance({"weights": str(dino_folder)}, device="cpu")
    scorer.load()
    distance = scorer.score([whole("x", forgery, real)])[0]

    model = transformers.ViTModel.from_pretrained(dino_folder, local_files_only=True).eval()
    pixels = scorer.embedder.processor(images=[forgery, real], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        tokens = torch.nn.functional.normalize(model(pixel_values=pixels).last_hidden_state[:, 0], dim=-1)
    assert distance == pytest.approx(1 - float(tokens[0] @ tokens[1]), abs=1e-5)


def test_crop_sample_uses_mask_box():
    image = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)
    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:9] = True
    sample = crop_sample("x", image, image, mask, "p", "mask-box")
    assert sample.forgery.shape == (3, 6, 3)
    assert np.array_equal(sample.forgery, image[2:5, 3:9])
    assert crop_sample("x", image, image, mask, "p", "image").forgery.shape == (10, 12, 3)


def test_unknown_scorer_suggests_a_name():
    with pytest.raises(ScorerError, match="Did you mean 'brisque'"):
        registry.get("brisq")


def test_unknown_scorer_parameter_is_rejected():
    with pytest.raises(ScorerError, match="unknown parameter"):
        ClipScore({"weight": "x"})
