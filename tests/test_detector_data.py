"""Detector data: IMDLBenCo JSON lists, release folders, mask thresholding, resizing and augmentation."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from detector.augment import augment, brightness_contrast, copy_move, jpeg_roundtrip
from detector.data import ForgeryDataset, Sample, normalize, read_dataset_specs, read_mask, read_samples
from detector.errors import DetectorError
from detector_helpers import make_release_folder, write_json_list, write_png


@pytest.fixture
def release(tmp_path):
    return make_release_folder(tmp_path / "val", count=2)


def test_release_folder_pairs_masks(release):
    samples = read_samples(release)
    assert [sample.image.name for sample in samples] == [
        "COCO_000000000000.png", "COCO_000000000001.png", "LaMa_Stuff_COCO_000000000000.png", "LaMa_Stuff_COCO_000000000001.png",
    ]
    assert samples[0].mask is None
    assert samples[2].mask == release / "Gt" / "LaMa_Stuff_COCO_000000000000_mask.png"


def test_release_folder_missing_mask(release):
    (release / "Gt" / "LaMa_Stuff_COCO_000000000001_mask.png").unlink()
    with pytest.raises(DetectorError, match="LaMa_Stuff_COCO_000000000001_mask.png"):
        read_samples(release)


def test_json_list_resolves_relative_paths(release, tmp_path):
    path = tmp_path / "list.json"
    path.write_text(json.dumps([["val/Au/COCO_000000000000.png", "Negative"], ["val/Tp/LaMa_Stuff_COCO_000000000000.png", "val/Gt/LaMa_Stuff_COCO_000000000000_mask.png"]]))
    samples = read_samples(path)
    assert samples == [
        Sample(release / "Au" / "COCO_000000000000.png", None),
        Sample(release / "Tp" / "LaMa_Stuff_COCO_000000000000.png", release / "Gt" / "LaMa_Stuff_COCO_000000000000_mask.png"),
    ]


def test_json_list_bad_entry(tmp_path):
    path = tmp_path / "list.json"
    path.write_text(json.dumps([["a.png", "Negative"], ["b.png"]]))
    with pytest.raises(DetectorError, match="entry 1 must be"):
        read_samples(path)


def test_json_list_missing_file(release, tmp_path):
    path = tmp_path / "list.json"
    path.write_text(json.dumps([[str(release / "Au" / "gone.png"), "Negative"]]))
    with pytest.raises(DetectorError, match="1 missing file"):
        read_samples(path)


def test_specs_expand_test_set_json(release, tmp_path):
    listed = write_json_list(release, tmp_path / "stuff_val.json")
    test_set = tmp_path / "test_datasets.json"
    test_set.write_text(json.dumps({"stuff": str(listed), "release": str(release)}))
    datasets = read_dataset_specs([str(test_set), f"again={release}"])
    assert list(datasets) == ["stuff", "release", "again"]
    assert [len(samples) for samples in datasets.values()] == [4, 4, 4]


def test_specs_reject_duplicate_names(release):
    with pytest.raises(DetectorError, match="two datasets are named 'val'"):
        read_dataset_specs([str(release), str(release)])


def test_grey_mask_threshold(tmp_path):
    path = write_png(tmp_path / "mask.png", np.array([[0, 127, 128, 255]], np.uint8))
    assert read_mask(path).tolist() == [[0, 0, 1, 1]]


def test_rgb_mask_uses_channel_mean(tmp_path):
    # Means 127.67 (> 127.5) and 127.33.
    path = write_png(tmp_path / "mask.png", np.array([[[128, 128, 127], [127, 128, 127]]], np.uint8))
    assert read_mask(path).tolist() == [[1, 0]]


def test_zero_one_mask_reads_empty(tmp_path):
    path = write_png(tmp_path / "mask.png", np.array([[0, 1], [1, 1]], np.uint8))
    assert read_mask(path).sum() == 0


def test_rgba_mask_ignores_alpha(tmp_path):
    path = tmp_path / "mask.png"
    Image.fromarray(np.array([[[255, 255, 255, 0], [0, 0, 0, 255]]], np.uint8), "RGBA").save(path)
    assert read_mask(path).tolist() == [[1, 0]]


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "P", "1"])
def test_mask_modes_read_as_pil_rgb(tmp_path, mode):
    # Reference: PIL's convert("RGB"), channel mean > 127.5, as IMDLBenCo reads masks.
    values = np.random.default_rng(0).integers(0, 256, (9, 11, 4), dtype=np.uint8)
    source = Image.fromarray(values, "RGBA") if "A" in mode else Image.fromarray(values[:, :, :3], "RGB")
    image = source.convert(mode)
    path = tmp_path / f"mask-{mode}.png"
    image.save(path)
    expected = np.asarray(Image.open(path).convert("RGB")).mean(axis=2) > 127.5
    assert np.array_equal(read_mask(path), expected.astype(np.uint8))


def test_dataset_item(release):
    dataset = ForgeryDataset(read_samples(release), image_size=64)
    authentic, forgery = dataset[0], dataset[2]
    assert authentic["image"].shape == (64, 64, 3)
    assert authentic["image"].dtype == torch.uint8
    assert authentic["label"].item() == 0.0
    assert authentic["mask"].sum().item() == 0
    assert forgery["label"].item() == 1.0
    assert forgery["mask"].shape == (1, 64, 64)
    assert set(forgery["mask"].unique().tolist()) == {0, 1}


def test_dataset_resizes_bilinearly(release):
    item = ForgeryDataset(read_samples(release), image_size=64)[0]
    original = np.asarray(Image.open(release / "Au" / "COCO_000000000000.png"))
    import cv2

    expected = cv2.resize(original, (64, 64), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(item["image"].numpy(), expected)


def test_dataset_rejects_size_mismatch(release):
    write_png(release / "Gt" / "LaMa_Stuff_COCO_000000000000_mask.png", np.zeros((10, 10), np.uint8))
    dataset = ForgeryDataset(read_samples(release), image_size=64)
    with pytest.raises(DetectorError, match="must match"):
        dataset[2]


def test_augmentation_depends_on_seed_epoch_and_index(release):
    dataset = ForgeryDataset(read_samples(release), image_size=64, augment=True, seed=7)
    first = dataset[2]["image"]
    assert torch.equal(dataset[2]["image"], first)
    dataset.epoch = 1
    assert not torch.equal(dataset[2]["image"], first)


def test_normalize_uses_imagenet_statistics():
    image = torch.full((1, 1, 1, 3), 255, dtype=torch.uint8)
    assert normalize(image).flatten().tolist() == pytest.approx([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225])


def test_normalize_moves_channels_first():
    image = torch.zeros((2, 4, 5, 3), dtype=torch.uint8)
    image[..., 0] = 255
    output = normalize(image)
    assert output.shape == (2, 3, 4, 5)
    assert output[0, 0, 0, 0].item() == pytest.approx((1 - 0.485) / 0.229)
    assert output[0, 1, 0, 0].item() == pytest.approx(-0.456 / 0.224)


def test_copy_move_marks_destination():
    rng = np.random.default_rng(3)
    image = np.arange(40 * 50 * 3, dtype=np.uint32).reshape(40, 50, 3).astype(np.uint8)
    new_image, mask = copy_move(image, np.zeros((40, 50), np.uint8), np.random.default_rng(3))
    # Replay the generator: source window, then destination of the same size.
    from detector.augment import random_window

    top, left, height, width = random_window(40, 50, rng)
    destination_top, destination_left, _, _ = random_window(40, 50, rng, (height, width))
    assert mask.sum() == height * width
    assert np.array_equal(new_image[destination_top : destination_top + height, destination_left : destination_left + width], image[top : top + height, left : left + width])


def test_inpainting_crop_matches_full_image():
    import cv2

    from detector.augment import INPAINT_RADIUS, inpaint_rectangle, random_window

    image = np.random.default_rng(5).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    for seed in range(4):
        output, _ = inpaint_rectangle(image, np.zeros((60, 80), np.uint8), np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        top, left, height, width = random_window(60, 80, rng)
        method = cv2.INPAINT_TELEA if rng.random() < 0.5 else cv2.INPAINT_NS
        hole = np.zeros((60, 80), np.uint8)
        hole[top : top + height, left : left + width] = 1
        assert np.array_equal(output, cv2.inpaint(image, hole, INPAINT_RADIUS, method))


def test_brightness_contrast_by_hand():
    image = np.full((1, 1, 3), 100, np.uint8)
    # 100 * 1.1 + 0.05 * 255 = 122.75
    assert brightness_contrast(image, 0.05, 0.1)[0, 0].tolist() == [123, 123, 123]


def test_jpeg_roundtrip_keeps_shape():
    image = np.random.default_rng(0).integers(0, 256, (33, 47, 3), dtype=np.uint8)
    output = jpeg_roundtrip(image, 70)
    assert output.shape == image.shape
    assert not np.array_equal(output, image)


def test_augment_keeps_image_and_mask_aligned():
    # A white left third marked as forged: after any flip, rotation or scale, white pixels and the mask
    # must still coincide. Blur and JPEG blur the edge, and copy-move or inpainting may add a rectangle.
    image = np.zeros((60, 90, 3), np.uint8)
    mask = np.zeros((60, 90), np.uint8)
    image[:, :30] = 255
    mask[:, :30] = 1
    agreement = []
    for seed in range(20):
        new_image, new_mask = augment(image, mask, np.random.default_rng(seed))
        agreement.append(np.mean((new_image.mean(axis=2) > 127) == (new_mask == 1)))
    assert min(agreement) > 0.8
