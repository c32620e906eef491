"""Segmenter backends with tiny random models, saved to a temporary folder and run through the masks stage.

The photos are the two bundled COCO photos, given as a source without annotations (as ImageNet and
Places are), so the stage must fall back to the recipe's segmenter.
"""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    BertConfig,
    BertTokenizer,
    GroundingDinoConfig,
    GroundingDinoForObjectDetection,
    GroundingDinoProcessor,
    Mask2FormerConfig,
    Mask2FormerForUniversalSegmentation,
    Sam2Config,
    Sam2HieraDetConfig,
    Sam2MaskDecoderConfig,
    Sam2Model,
    Sam2PromptEncoderConfig,
    Sam2VisionConfig,
    SwinConfig,
)
from transformers.models.grounding_dino.image_processing_pil_grounding_dino import GroundingDinoImageProcessorPil
from transformers.models.mask2former.image_processing_pil_mask2former import Mask2FormerImageProcessorPil

from brgen_build.errors import BrgenError
from brgen_build.files import read_png, sha256_file
from conftest import SAMPLE_DIR, sample_recipe_data
from mask_fixtures import build_masks
from mask_gen.categories import CategoryTable
from mask_gen.segmenters.grounded_sam2 import phrase_token_spans

PANOPTIC = CategoryTable.bundled("coco_panoptic")
PROMPT_WORDS = ["sky", "grass", "tree", "person", "horse", "truck"]


def tiny_swin(**extra) -> SwinConfig:
    return SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=4, image_size=64, **extra)


@pytest.fixture(scope="module")
def mask2former_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mask2former")
    id2label = {index: category.name for index, category in enumerate(PANOPTIC.categories.values())}
    config = Mask2FormerConfig(
        backbone_config=tiny_swin(out_features=["stage1", "stage2", "stage3", "stage4"]),
        feature_size=32, mask_feature_size=32, hidden_dim=32, encoder_feedforward_dim=64, encoder_layers=1,
        decoder_layers=2, num_attention_heads=2, dim_feedforward=64, num_queries=10,
        id2label=id2label, label2id={name: index for index, name in id2label.items()},
        init_std=1.0,  # large random weights give confident, non-empty segments
    )
    torch.manual_seed(0)
    Mask2FormerForUniversalSegmentation(config).save_pretrained(folder)
    Mask2FormerImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 128}, do_reduce_labels=False).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def grounded_sam2_dirs(tmp_path_factory):
    detector_folder = tmp_path_factory.mktemp("grounding-dino")
    vocab = detector_folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "."] + PROMPT_WORDS) + "\n")
    text = BertConfig(vocab_size=12, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    config = GroundingDinoConfig(
        backbone_config=tiny_swin(out_indices=[2, 3, 4]), text_config=text, num_queries=12, encoder_layers=1, decoder_layers=2,
        d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64, encoder_attention_heads=2, decoder_attention_heads=2,
        max_text_len=64, encoder_n_points=2, decoder_n_points=2,
    )
    torch.manual_seed(0)
    GroundingDinoForObjectDetection(config).save_pretrained(detector_folder)
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 128}),
        tokenizer=BertTokenizer(str(vocab), do_lower_case=True),
    )
    processor.save_pretrained(detector_folder)

    sam_folder = tmp_path_factory.mktemp("sam2")
    hiera = Sam2HieraDetConfig(
        hidden_size=8, num_attention_heads=1, image_size=[128, 128], window_positional_embedding_background_size=[4, 4],
        blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[8, 16, 32, 64], num_attention_heads_per_stage=[1, 1, 2, 2],
        window_size_per_stage=[4, 4, 4, 4], global_attention_blocks=[3],
    )
    sam_config = Sam2Config(
        vision_config=Sam2VisionConfig(backbone_config=hiera, backbone_channel_list=[64, 32, 16, 8], backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]], fpn_hidden_size=16),
        prompt_encoder_config=Sam2PromptEncoderConfig(hidden_size=16, image_size=128, patch_size=16, mask_input_channels=4),
        mask_decoder_config=Sam2MaskDecoderConfig(hidden_size=16, mlp_dim=32, num_hidden_layers=2, num_attention_heads=2, iou_head_hidden_dim=16),
    )
    torch.manual_seed(0)
    Sam2Model(sam_config).save_pretrained(sam_folder)
    return detector_folder, sam_folder


def segmenter_recipe(segmenter: dict) -> dict:
    data = sample_recipe_data()
    source = data["sources"][0]
    for key in ("annotations", "categories"):
        source.pop(key)
    source.update({"token": "ImageNet", "kind": "imagenet"})
    data["masks"]["stuff"].update({"area": [0.0, 1.0], "min_region": 0.0})
    data["masks"]["background"].update({"area": [0.0, 1.0], "margin_px": 0})
    data["masks"]["segmenter"] = segmenter
    return data


def expected_mask2former_stuff(folder, photo: np.ndarray) -> np.ndarray:
    """Stuff pixels of one photo from the model directly, with the processor's own post-processing."""
    processor = Mask2FormerImageProcessorPil.from_pretrained(folder)
    model = Mask2FormerForUniversalSegmentation.from_pretrained(folder).eval()
    with torch.no_grad():
        outputs = model(**processor(images=[photo], return_tensors="pt"))
    stuff_labels = {label for label, name in model.config.id2label.items() if not PANOPTIC.by_name(name).isthing}
    result = processor.post_process_panoptic_segmentation(outputs, threshold=0.5, label_ids_to_fuse=stuff_labels, target_sizes=[photo.shape[:2]])[0]
    stuff_ids = [info["id"] for info in result["segments_info"] if info["label_id"] in stuff_labels]
    return np.isin(result["segmentation"].numpy(), stuff_ids)


def test_mask2former_through_stage(tmp_path, mask2former_dir):
    data = segmenter_recipe({"backend": "mask2former", "weights": str(mask2former_dir), "device": "cpu", "batch_size": 2})
    root, records, summary = build_masks(tmp_path, data)
    photo = np.asarray(Image.open(SAMPLE_DIR / "images" / "000000142238.jpg").convert("RGB"))
    stuff = expected_mask2former_stuff(mask2former_dir, photo)
    record = records["Stuff_ImageNet_000000142238"]
    assert summary.counts["failed"] == 0
    assert stuff.any()
    assert record["status"] == "ok"
    assert record["area_ratio"] == pytest.approx(stuff.mean(), abs=1e-6)
    assert np.array_equal(read_png(root.absolute(record["files"]["mask"]["path"])) == 255, stuff)
    assert record["segmenter"]["sha256"] == {"model.safetensors": sha256_file(mask2former_dir / "model.safetensors")}
    assert all(PANOPTIC.is_stuff(c["id"]) and PANOPTIC.name(c["id"]) == c["name"] for c in record["classes"])


def test_grounded_sam2_through_stage(tmp_path, grounded_sam2_dirs):
    detector_folder, sam_folder = grounded_sam2_dirs
    segmenter = {
        "backend": "grounded-sam2",
        "weights": {"grounding_dino": str(detector_folder), "sam2": str(sam_folder)},
        "device": "cpu",
        "batch_size": 2,
        "threshold": 0.0,
        "text_threshold": 0.0,
        "prompts": {"sky": "sky-other", "grass": "grass", "tree": "tree", "person": "person", "horse": "horse"},
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    root, records, summary = build_masks(tmp_path / "a", segmenter_recipe(segmenter))
    _, again, _ = build_masks(tmp_path / "b", segmenter_recipe(segmenter))
    stuff_names = {"sky-other", "grass", "tree"}
    assert summary.counts["failed"] == 0
    for photo in ("000000142238", "000000439180"):
        stuff = records[f"Stuff_ImageNet_{photo}"]
        background = records[f"Background_ImageNet_{photo}"]
        assert stuff["status"] == "ok"
        assert {c["name"] for c in stuff["classes"]} <= stuff_names
        assert background["classes"][0]["name"] in {"person", "horse"}
        mask = read_png(root.absolute(stuff["files"]["mask"]["path"]))
        assert stuff["area_ratio"] == pytest.approx((mask == 255).mean(), abs=1e-6)
        assert again[f"Stuff_ImageNet_{photo}"]["files"]["mask"]["sha256"] == stuff["files"]["mask"]["sha256"]
    assert records["Stuff_ImageNet_000000142238"]["segmenter"]["backend"] == "grounded-sam2"


def test_phrase_spans_follow_tokens(grounded_sam2_dirs):
    tokenizer = BertTokenizer(str(grounded_sam2_dirs[0] / "vocab.txt"), do_lower_case=True)
    text = "sky. grass. person."
    offsets = tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
    assert phrase_token_spans(text, ["sky", "grass", "person"], offsets) == [(1, 2), (3, 4), (5, 6)]


def test_missing_weights_fail_before_work(tmp_path):
    missing = tmp_path / "weights" / "mask2former"
    data = segmenter_recipe({"backend": "mask2former", "weights": str(missing)})
    with pytest.raises(BrgenError, match="facebook/mask2former-swin-large-coco-panoptic") as error:
        build_masks(tmp_path, data)
    assert f"mask2former weights folder {missing} (model) not found" in str(error.value)
    assert not (tmp_path / "root" / "masks").exists()


def test_non_panoptic_labels_rejected(tmp_path, mask2former_dir):
    folder = tmp_path / "ade"
    model = Mask2FormerForUniversalSegmentation.from_pretrained(mask2former_dir)
    model.config.id2label = {0: "wall", **{index: f"label-{index}" for index in range(1, 133)}}
    model.save_pretrained(folder)
    Mask2FormerImageProcessorPil.from_pretrained(mask2former_dir).save_pretrained(folder)
    data = segmenter_recipe({"backend": "mask2former", "weights": str(folder), "device": "cpu"})
    with pytest.raises(BrgenError, match="labels that are not COCO panoptic categories \\('wall', 'label-1'"):
        build_masks(tmp_path, data)


def test_source_without_segmenter_is_skipped(tmp_path):
    data = segmenter_recipe({"backend": "mask2former", "weights": "unused"})
    data["masks"].pop("segmenter")
    _, records, _ = build_masks(tmp_path, data)
    record = records["Stuff_ImageNet_000000142238"]
    assert record["status"] == "skipped"
    assert record["reason"] == "source ImageNet has no `annotations` and the recipe sets no `masks.segmenter`"


def test_recipe_segmenter_errors(tmp_path):
    from brgen_build.errors import RecipeError
    from brgen_build.recipe import parse_recipe

    data = segmenter_recipe({"backend": "sam3", "weights": "x"})
    with pytest.raises(RecipeError, match="`masks.segmenter.backend` must be one of mask2former, grounded-sam2, got 'sam3'"):
        parse_recipe(data, "recipe.yaml", tmp_path)
    data = segmenter_recipe({"backend": "grounded-sam2", "weights": {"grounding_dino": "x"}})
    with pytest.raises(RecipeError, match="`masks.segmenter.weights.sam2` is missing"):
        parse_recipe(data, "recipe.yaml", tmp_path)


def test_segmenter_weights_are_runtime(tmp_path, mask2former_dir):
    from brgen_build.layout import DatasetRoot
    from conftest import write_recipe

    data = segmenter_recipe({"backend": "mask2former", "weights": str(mask2former_dir), "device": "cpu"})
    root = DatasetRoot(tmp_path / "root")
    root.load_recipe(write_recipe(tmp_path, data))
    data["masks"]["segmenter"].update({"weights": str(tmp_path / "moved"), "device": "cuda:1", "batch_size": 8})
    recipe = root.load_recipe(write_recipe(tmp_path, data, "moved.yaml"))
    assert recipe.masks.segmenter.weights == {"model": tmp_path / "moved"}
    assert json.loads(json.dumps(recipe.raw["masks"]["segmenter"]["batch_size"])) == 8
