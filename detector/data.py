"""Detector datasets: IMDLBenCo JSON lists and the release's Au/Tp/Gt folders, read the way IMDLBenCo reads them.

Sources:
- An IMDLBenCo JSON list: `[[image_path, mask_path], [image_path, "Negative"], ...]`. brgen's export writes
  absolute paths; relative ones are resolved against the JSON file's folder.
- A release folder with `Au/` (authentic images), `Tp/` (forgeries) and `Gt/` (their masks, named after the
  forgery: `Tp/X.png` has `Gt/X_mask.png`).
- For evaluation, an IMDLBenCo test-set JSON `{name: path}` names several of the above.

A mask is read as RGB, averaged over the channels and thresholded at > 127.5, as IMDLBenCo does, so a mask
stored as 0/1 reads as empty. An image's label is 1 when its mask (after augmentation) has a forged pixel.
Images are resized to a square of `image_size` pixels, bilinearly; masks by nearest neighbour.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from detector.augment import augment
from detector.errors import DetectorError

NEGATIVE = "Negative"
MASK_SUFFIX = "_mask.png"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
PREFETCH_BATCHES = 4
# ImageNet statistics, the normalisation of the published model's input (RGB, 0..1 scale).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Sample:
    """One dataset entry: an image and its mask, or None for an authentic image."""

    image: Path
    mask: Path | None


def read_samples(path: str | Path) -> list[Sample]:
    """Read an IMDLBenCo JSON list or a release folder (Au/Tp/Gt).

    Raises:
        DetectorError: the source is missing, malformed, or names files that do not exist.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        return read_release_folder(path)
    if path.is_file():
        data = _load_json(path)
        if isinstance(data, dict):
            raise DetectorError(f"{path} is an IMDLBenCo test-set JSON ({{name: path}}); pass the dataset it names, or pass it to eval-detector --data")
        return _samples_from_list(path, data)
    raise DetectorError(f"dataset {path} not found; pass an IMDLBenCo JSON list or a folder with Au/, Tp/ and Gt/")


def read_dataset_specs(specs: list[str]) -> dict[str, list[Sample]]:
    """Read named datasets for evaluation, in the order given.

    A spec is `NAME=PATH` or `PATH`. A PATH is a JSON list, a release folder, or an IMDLBenCo test-set JSON
    `{name: path}` that expands into one dataset per entry. Without a NAME, a dataset is named after its
    file stem or folder name.

    Raises:
        DetectorError: a dataset cannot be read, or two datasets get the same name.
    """
    datasets: dict[str, list[Sample]] = {}
    for spec in specs:
        name, separator, location = spec.partition("=")
        if not separator:
            name, location = "", spec
        path = Path(location).expanduser()
        named = _expand_test_set(path) if path.is_file() and path.suffix == ".json" else None
        if named is None:
            named = {name or path.stem or path.name: path}
        elif name:
            named = {f"{name}/{entry}": entry_path for entry, entry_path in named.items()}
        for dataset_name, dataset_path in named.items():
            if dataset_name in datasets:
                raise DetectorError(f"two datasets are named {dataset_name!r}; give each one a name with NAME=PATH")
            datasets[dataset_name] = read_samples(dataset_path)
    return datasets


def _expand_test_set(path: Path) -> dict[str, Path] | None:
    data = _load_json(path)
    if not isinstance(data, dict):
        return None
    named = {}
    for name, location in data.items():
        if not isinstance(location, str):
            raise DetectorError(f"{path}: entry {name!r} must be a path string, got {location!r}")
        named[str(name)] = _resolve(path, location)
    return named


def read_release_folder(folder: Path) -> list[Sample]:
    """Read `Au/` as authentic images and `Tp/` as forgeries whose masks are `Gt/<stem>_mask.png`."""
    authentic, tampered, truth = folder / "Au", folder / "Tp", folder / "Gt"
    if not authentic.is_dir() and not tampered.is_dir():
        raise DetectorError(f"{folder} has neither Au/ nor Tp/; pass a release folder or an IMDLBenCo JSON list")
    samples = [Sample(image, None) for image in _image_files(authentic)]
    missing = []
    for image in _image_files(tampered):
        mask = truth / f"{image.stem}{MASK_SUFFIX}"
        if mask.is_file():
            samples.append(Sample(image, mask))
        else:
            missing.append(mask)
    if missing:
        raise DetectorError(f"{len(missing)} forgeries in {tampered} have no mask, first {missing[0]}; every Tp/X.png needs Gt/X{MASK_SUFFIX}")
    if not samples:
        raise DetectorError(f"{folder} contains no images in Au/ or Tp/")
    return samples


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."))


def _load_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DetectorError(f"{path} is not valid JSON: {error}") from None


def _samples_from_list(path: Path, data: object) -> list[Sample]:
    if not isinstance(data, list) or not data:
        raise DetectorError(f"{path} must be a non-empty JSON list of [image_path, mask_path or \"Negative\"]")
    samples, missing = [], []
    for index, entry in enumerate(data):
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and all(isinstance(part, str) for part in entry)):
            raise DetectorError(f"{path}: entry {index} must be [image_path, mask_path or \"Negative\"], got {entry!r}")
        image = _resolve(path, entry[0])
        mask = None if entry[1] == NEGATIVE else _resolve(path, entry[1])
        missing += [file for file in (image, mask) if file is not None and not file.is_file()]
        samples.append(Sample(image, mask))
    if missing:
        raise DetectorError(f"{path} names {len(missing)} missing file(s), first {missing[0]}; fix the paths or export the dataset again")
    return samples


def _resolve(list_path: Path, location: str) -> Path:
    candidate = Path(location).expanduser()
    return candidate if candidate.is_absolute() else (list_path.parent / candidate).resolve()


# OpenCV 4.10 and later decode straight to RGB. Older versions decode to BGR and need a conversion.
_READ_RGB = getattr(cv2, "IMREAD_COLOR_RGB", cv2.IMREAD_COLOR)


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to HxWx3 uint8 RGB, ignoring EXIF orientation as IMDLBenCo's PIL loader does."""
    image = cv2.imread(str(path), _READ_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise DetectorError(f"cannot decode image {path}; check that it is a complete image file")
    return image if _READ_RGB != cv2.IMREAD_COLOR else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_mask(path: Path) -> np.ndarray:
    """Decode a mask to HxW uint8: 1 where the mean of its R, G and B values exceeds 127.5, else 0.

    Alpha is ignored and grey masks count as R = G = B, as after PIL's convert("RGB"). OpenCV decodes
    8-bit files, and PIL decodes the others as IMDLBenCo does.
    """
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None or mask.dtype != np.uint8:
        return _read_mask_with_pil(path)
    if mask.ndim == 3 and mask.shape[2] == 2:  # grey and alpha
        mask = mask[:, :, 0]
    if mask.ndim == 2:
        return (mask > 127).astype(np.uint8)
    # mean > 127.5 over three integer channels is sum > 382.5.
    return (mask[:, :, :3].sum(axis=2, dtype=np.uint16) > 382).astype(np.uint8)


def _read_mask_with_pil(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as mask:
            rgb = np.asarray(mask.convert("RGB"))
    except OSError as error:
        raise DetectorError(f"cannot decode mask {path}: {error}") from None
    return (rgb.sum(axis=2, dtype=np.uint16) > 382).astype(np.uint8)


class ForgeryDataset(torch.utils.data.Dataset):
    """Samples as network inputs: image [S,S,3] uint8 RGB, mask [1,S,S] uint8 (1 = forged), label float.

    The image stays channels-last because `normalize` moves the channels on the device, where the copy is
    cheap. In a loader worker the same copy took about 10 ms per 512x512 image (2-core CPU, cProfile).

    With `augment`, item i of epoch e is augmented with a generator seeded by (seed, e, i), so the data
    depend neither on the number of loader workers nor on the process that reads them. Set `epoch` before
    each epoch; loader workers pick it up when the loader starts them, so keep `persistent_workers` off.

    `make_loader` reads whole batches through `__getitems__`, which resizes each sample straight into the
    batch tensors instead of stacking per-sample tensors afterwards.
    """

    def __init__(self, samples: list[Sample], image_size: int, augment: bool = False, seed: int = 0):
        self.samples = samples
        self.image_size = image_size
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image = np.empty((self.image_size, self.image_size, 3), np.uint8)
        mask = np.empty((self.image_size, self.image_size), np.uint8)
        label = self._load(index, image, mask)
        return {"image": torch.from_numpy(image), "mask": torch.from_numpy(mask)[None], "label": torch.tensor(label), "index": torch.tensor(index)}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """Load a batch; in a loader worker the tensors live in shared memory, ready to pass to the main process."""
        count, size = len(indices), self.image_size
        images = _empty_batch((count, size, size, 3))
        masks = _empty_batch((count, 1, size, size))
        labels = torch.tensor([self._load(index, images[row].numpy(), masks[row, 0].numpy()) for row, index in enumerate(indices)])
        return {"image": images, "mask": masks, "label": labels, "index": torch.tensor(indices)}

    def _load(self, index: int, image_out: np.ndarray, mask_out: np.ndarray) -> float:
        """Decode, augment and resize sample `index` into the given arrays; return its label."""
        sample = self.samples[index]
        image = read_image(sample.image)
        if sample.mask is None:
            mask = np.zeros(image.shape[:2], np.uint8)
        else:
            mask = read_mask(sample.mask)
            if mask.shape != image.shape[:2]:
                raise DetectorError(f"mask {sample.mask} is {mask.shape[1]}x{mask.shape[0]} but image {sample.image} is {image.shape[1]}x{image.shape[0]}; they must match")

        if self.augment:
            image, mask = augment(image, mask, np.random.default_rng([self.seed, self.epoch, index]))
        label = float(mask.any())

        size = (self.image_size, self.image_size)
        if image.shape[:2] == size:
            np.copyto(image_out, image)
            np.copyto(mask_out, mask)
        else:
            cv2.resize(image, size, dst=image_out, interpolation=cv2.INTER_LINEAR)
            cv2.resize(mask, size, dst=mask_out, interpolation=cv2.INTER_NEAREST)
        return label


def _empty_batch(shape: tuple[int, ...]) -> torch.Tensor:
    batch = torch.empty(shape, dtype=torch.uint8)
    return batch.share_memory_() if torch.utils.data.get_worker_info() is not None else batch


def _keep_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return batch


def make_loader(
    dataset: torch.utils.data.Dataset, batch_size: int, workers: int, sampler=None, drop_last: bool = False,
    pin_memory: bool = False, persistent_workers: bool = False,
) -> DataLoader:
    """Return a DataLoader over a ForgeryDataset (or a Subset of one) that takes whole batches from `__getitems__`.

    Each worker keeps up to 4 batches ready instead of PyTorch's default 2. On a busy 2-core machine that
    raised the best loader rate in benchmarks/nfa_vit.py, though those figures were noisy.
    """
    prefetch = {"prefetch_factor": PREFETCH_BATCHES} if workers > 0 else {}
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=drop_last,
        pin_memory=pin_memory, persistent_workers=persistent_workers and workers > 0, collate_fn=_keep_batch, **prefetch,
    )


def normalize(image: torch.Tensor) -> torch.Tensor:
    """Turn a uint8 RGB batch [B,H,W,3] into the model's float input [B,3,H,W]: 0..1, then ImageNet mean and std."""
    mean = torch.tensor(IMAGENET_MEAN, device=image.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=image.device).view(1, 3, 1, 1)
    return (image.permute(0, 3, 1, 2).float() / 255.0 - mean) / std
