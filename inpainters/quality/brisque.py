"""BRISQUE (Mittal, Moorthy and Bovik, IEEE TIP 2012): no-reference image quality, lower is better.

Scores run from about 0 (pristine) to about 100 (heavily distorted); very clean images can score below 0.

Model: the support-vector regressor the BRISQUE authors trained on the whole LIVE database (`allmodel`:
libsvm epsilon-SVR, RBF kernel, gamma 0.05, 770 support vectors, rho -155.845) and the per-feature ranges
that scale its 36 features to [-1, 1]. The PyPI package `brisque` (0.2.0) ships both, as
`brisque/models/svm.txt` and `brisque/models/normalize.pickle`. brgen reads those two files and uses none of
that package's code. Its feature code departs from the MATLAB release the model was trained with: it fits
the MSCN field with an asymmetric model, converts to grey with other weights and halves the image without
antialiasing. Its `BRISQUE.score` also raises a TypeError with numpy 2.4.

Features, as the MATLAB release (`brisque_feature.m`) computes them: grey levels 0..255 (MATLAB `rgb2gray`
weights, rounded); at full and half size, MSCN coefficients with a 7x7 Gaussian window (sigma 7/6, zero
padding) and C = 1; a generalized Gaussian fit of the MSCN field (shape, variance) and an asymmetric one
of its products with the four neighbours (shape, mean, left and right variance), shapes searched on the
grid 0.2:0.001:10. The half-size image comes from MATLAB's antialiased bicubic `imresize(img, 0.5)`.
"""

from __future__ import annotations

import importlib.util
import math
import pickle
from pathlib import Path

import cv2
import numpy as np

from inpainters.quality.base import Scorer, ScoreSample, ScorerError
from inpainters.quality.weights import locate_weight_folder

MODEL_FILE = "svm.txt"
RANGE_FILE = "normalize.pickle"
MODEL_ORIGIN = "the PyPI package `brisque` (pip install 'brgen[filter]', or pip install -e '.[filter]' in a clone of brgen, installs it; brgen reads brisque/models/ from it)"

# MATLAB rgb2gray: the luma row of the inverse NTSC (YIQ) matrix.
GREY_WEIGHTS = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])
SHAPE_GRID = 0.2 + 0.001 * np.arange(9801)
_log_gamma = np.vectorize(math.lgamma)
# Moment ratio of a generalized Gaussian of shape g: Gamma(1/g) Gamma(3/g) / Gamma(2/g)^2.
GGD_RATIO = np.exp(_log_gamma(1 / SHAPE_GRID) + _log_gamma(3 / SHAPE_GRID) - 2 * _log_gamma(2 / SHAPE_GRID))
AGGD_RATIO = 1 / GGD_RATIO
# (row, column) shifts of MATLAB circshift for the horizontal, vertical and two diagonal neighbours.
NEIGHBOUR_SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))


class BrisqueModel:
    """The epsilon-SVR and feature ranges of a BRISQUE model folder."""

    def __init__(self, support_vectors: np.ndarray, coefficients: np.ndarray, gamma: float, rho: float,
                 feature_min: np.ndarray, feature_max: np.ndarray):
        self.support_vectors = support_vectors
        self.coefficients = coefficients
        self.gamma = gamma
        self.rho = rho
        self.feature_min = feature_min
        self.feature_max = feature_max

    @classmethod
    def from_folder(cls, folder: Path) -> "BrisqueModel":
        support_vectors, coefficients, gamma, rho = read_libsvm_rbf_model(folder / MODEL_FILE)
        feature_min, feature_max = read_feature_ranges(folder / RANGE_FILE)
        if feature_min.size != support_vectors.shape[1]:
            raise ScorerError(f"brisque: {folder / RANGE_FILE} has {feature_min.size} ranges but the model has {support_vectors.shape[1]} features")
        return cls(support_vectors, coefficients, gamma, rho, feature_min, feature_max)

    def predict(self, features: np.ndarray) -> float:
        """Scale 36 features to [-1, 1] as libsvm's svm-scale does and return the SVR's output."""
        scaled = -1.0 + 2.0 * (features - self.feature_min) / (self.feature_max - self.feature_min)
        distances = np.sum((self.support_vectors - scaled) ** 2, axis=1)
        return float(self.coefficients @ np.exp(-self.gamma * distances) - self.rho)


def read_libsvm_rbf_model(path: Path) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Read a libsvm text model of an RBF epsilon-SVR: support vectors, their coefficients, gamma and rho."""
    header: dict[str, str] = {}
    rows: list[tuple[float, dict[int, float]]] = []
    with open(path, encoding="ascii") as handle:
        for line in handle:
            if line.strip() == "SV":
                break
            key, _, value = line.strip().partition(" ")
            header[key] = value
        for line in handle:
            parts = line.split()
            if parts:
                rows.append((float(parts[0]), {int(index): float(value) for index, value in (part.split(":") for part in parts[1:])}))
    if header.get("svm_type") != "epsilon_svr" or header.get("kernel_type") != "rbf" or not rows:
        raise ScorerError(f"brisque: {path} is not a libsvm epsilon-SVR model with an RBF kernel and support vectors")
    width = max(max(values, default=0) for _, values in rows)
    support_vectors = np.zeros((len(rows), width))
    for row, (_, values) in enumerate(rows):
        for index, value in values.items():
            support_vectors[row, index - 1] = value
    coefficients = np.array([coefficient for coefficient, _ in rows])
    return support_vectors, coefficients, float(header["gamma"]), float(header["rho"])


class _PlainDataUnpickler(pickle.Unpickler):
    """An unpickler for plain dicts, lists and numbers that rejects every class or function reference."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a range file holds only numbers")


def read_feature_ranges(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read the per-feature minimum and maximum (`min_`, `max_`) from the `brisque` package's range pickle."""
    try:
        with open(path, "rb") as handle:
            ranges = _PlainDataUnpickler(handle).load()
        return np.asarray(ranges["min_"], dtype=np.float64), np.asarray(ranges["max_"], dtype=np.float64)
    except (pickle.UnpicklingError, KeyError, TypeError, EOFError) as error:
        raise ScorerError(f"brisque: {path} is not a range file with `min_` and `max_` lists ({error})") from None


def matlab_grey(image: np.ndarray) -> np.ndarray:
    """Convert HxWx3 uint8 RGB (or HxW grey) to float64 grey levels 0..255 as MATLAB `rgb2gray` on uint8 does."""
    if image.ndim == 2:
        return image.astype(np.float64)
    return np.floor(image.astype(np.float64) @ GREY_WEIGHTS + 0.5)


def gaussian_window(size: int = 7, sigma: float = 7 / 6) -> np.ndarray:
    """MATLAB `fspecial('gaussian', size, sigma)`, normalised to sum 1."""
    offsets = np.arange(size) - (size - 1) / 2
    window = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma**2))
    window[window < np.finfo(np.float64).eps * window.max()] = 0
    return window / window.sum()


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5, as MATLAB `imresize` uses for `bicubic`."""
    x = np.abs(x)
    return ((1.5 * x**3 - 2.5 * x**2 + 1) * (x <= 1)) + ((-0.5 * x**3 + 2.5 * x**2 - 4 * x + 2) * ((x > 1) & (x <= 2)))


def _halving_taps(length: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and weights, each (ceil(length / 2), 10), of MATLAB's antialiased bicubic halving of one axis."""
    scale = 0.5
    kernel_width = 4 / scale
    output = np.arange(1, math.ceil(length * scale) + 1, dtype=np.float64)
    centres = output / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(centres - kernel_width / 2)
    indices = left[:, None] + np.arange(math.ceil(kernel_width) + 2)[None, :]
    weights = scale * _cubic(scale * (centres[:, None] - indices))
    weights /= weights.sum(axis=1, keepdims=True)
    # Out-of-range taps mirror the edge (MATLAB's symmetric padding); indices above are 1-based.
    mirrored = np.concatenate([np.arange(length), np.arange(length - 1, -1, -1)])
    return mirrored[(indices.astype(np.int64) - 1) % (2 * length)], weights


def matlab_halve(image: np.ndarray) -> np.ndarray:
    """MATLAB `imresize(image, 0.5)` of a 2-D float64 array: bicubic with antialiasing, rows first."""
    indices, weights = _halving_taps(image.shape[0])
    image = np.einsum("op,opw->ow", weights, image[indices])
    indices, weights = _halving_taps(image.shape[1])
    return np.einsum("op,hop->ho", weights, image[:, indices])


def mscn(grey: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Mean-subtracted, contrast-normalised coefficients: (I - mu) / (sigma + 1), zero-padded local statistics."""
    mean = cv2.filter2D(grey, cv2.CV_64F, window, borderType=cv2.BORDER_CONSTANT)
    mean_of_squares = cv2.filter2D(grey * grey, cv2.CV_64F, window, borderType=cv2.BORDER_CONSTANT)
    deviation = np.sqrt(np.abs(mean_of_squares - mean * mean))
    return (grey - mean) / (deviation + 1)


def fit_ggd(values: np.ndarray) -> tuple[float, float]:
    """Fit a zero-mean generalized Gaussian by moment matching; return (shape, variance).

    Raises:
        ValueError: every value is zero.
    """
    variance = float(np.mean(values**2))
    mean_absolute = float(np.mean(np.abs(values)))
    if mean_absolute == 0:
        raise ValueError("all coefficients are zero")
    ratio = variance / mean_absolute**2
    return float(SHAPE_GRID[np.argmin(np.abs(ratio - GGD_RATIO))]), variance


def fit_aggd(values: np.ndarray) -> tuple[float, float, float, float]:
    """Fit an asymmetric generalized Gaussian; return (shape, mean, left variance, right variance).

    Zeros belong to neither side, as in the MATLAB release's `estimateaggdparam`.

    Raises:
        ValueError: no value is below zero, or none above.
    """
    negative = values[values < 0]
    positive = values[values > 0]
    if negative.size == 0 or positive.size == 0:
        raise ValueError(f"{negative.size} negative and {positive.size} positive products")
    left = math.sqrt(float(np.mean(negative**2)))
    right = math.sqrt(float(np.mean(positive**2)))
    balance = left / right
    ratio = float(np.mean(np.abs(values))) ** 2 / float(np.mean(values**2))
    normalised = ratio * (balance**3 + 1) * (balance + 1) / (balance**2 + 1) ** 2
    shape = float(SHAPE_GRID[np.argmin((AGGD_RATIO - normalised) ** 2)])
    mean = (right - left) * math.gamma(2 / shape) / math.gamma(1 / shape) * math.sqrt(math.gamma(1 / shape) / math.gamma(3 / shape))
    return shape, mean, left * left, right * right


def brisque_features(image: np.ndarray) -> np.ndarray:
    """Compute the 36 BRISQUE features of an HxWx3 uint8 RGB (or HxW grey) image.

    Raises:
        ValueError: the image is flat or too small, so a fit has no values on one side of zero.
    """
    grey = matlab_grey(image)
    window = gaussian_window()
    features: list[float] = []
    for scale in range(2):
        if scale:
            grey = matlab_halve(grey)
        coefficients = mscn(grey, window)
        try:
            features += fit_ggd(coefficients.ravel())
            for shift in NEIGHBOUR_SHIFTS:
                products = coefficients * np.roll(coefficients, shift, axis=(0, 1))
                features += fit_aggd(products.ravel())
        except ValueError as error:
            raise ValueError(f"BRISQUE is undefined for this {image.shape[1]}x{image.shape[0]} image ({error})") from None
    return np.array(features)


def installed_model_folder() -> Path | None:
    """Return the `models` folder of the installed `brisque` package, found without importing it, or None."""
    spec = importlib.util.find_spec("brisque")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    return folder if (folder / MODEL_FILE).is_file() and (folder / RANGE_FILE).is_file() else None


class Brisque(Scorer):
    name = "brisque"
    higher_is_better = False
    default_crop = "image"
    parameters = {"weights": None}

    def __init__(self, params=None, device="auto"):
        # The device is validated like every scorer's, but BRISQUE always runs on the CPU: the device
        # setting of the filter applies to the other scorers.
        super().__init__(params, device)
        self.device = "cpu"
        self.folder: Path | None = None
        self.model: BrisqueModel | None = None

    def check(self) -> None:
        self.folder = locate_weight_folder(
            self.name, self.params["weights"], "BRGEN_BRISQUE_WEIGHTS", (MODEL_FILE, RANGE_FILE), MODEL_ORIGIN, fallback=installed_model_folder()
        )

    def load(self) -> None:
        if self.folder is None:
            self.check()
        self.model = BrisqueModel.from_folder(self.folder)

    def checkpoint(self) -> dict:
        return {"folder": str(self.folder), "support_vectors": int(self.model.support_vectors.shape[0]), "rho": self.model.rho}

    def score(self, samples: list[ScoreSample]) -> list[float | None]:
        scores: list[float | None] = []
        for sample in samples:
            try:
                scores.append(self.model.predict(brisque_features(sample.forgery)))
            except ValueError:
                scores.append(None)
        return scores

