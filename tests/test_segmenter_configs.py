"""Full-size segmenter architectures built on the meta device, against published parameter counts.

Each configuration is built from the official hyperparameters, so the transformers classes brgen loads
can hold the official checkpoints:

- Mask2Former Swin-L, COCO panoptic: `configs/coco/panoptic-segmentation/swin/maskformer2_swin_large_IN21k_384_bs16_100ep.yaml`
  and its base `maskformer2_R50_bs16_50ep.yaml` in facebookresearch/Mask2Former (Swin-L embed 192, depths 2/2/18/2,
  heads 6/12/24/48, window 12, 384 pretraining; 200 queries, hidden 256, 10 decoder layers, 133 classes).
  The Swin-Transformer README (microsoft/Swin-Transformer) lists Swin-L 384 at 197M parameters with its
  1000-class head (1536 x 1000 + 1000); the backbone plus that head must match it. NOTE: no published count
  of the whole Mask2Former model was at hand, so the pixel decoder and transformer decoder are checked only
  by building from the official hyperparameters (215.5M parameters in all with transformers 5.25).
- GroundingDINO Swin-B: `groundingdino/config/GroundingDINO_SwinB_cfg.py` in IDEA-Research/GroundingDINO (swin_B_384_22k:
  embed 128, depths 2/2/18/2, heads 4/8/16/32, window 12; 900 queries, 6 + 6 layers, hidden 256, FFN 2048,
  bert-base-uncased, max_text_len 256). Published count: 232M for the Swin-B model (tokrepo.com's
  Grounding DINO page, "Swin-T (172M) and Swin-B (232M)").
- SAM 2.1 Hiera-L: `sam2/configs/sam2.1/sam2.1_hiera_l.yaml` in facebookresearch/sam2 (embed 144, 2 heads
  doubling per stage, stages 2/6/36/4, global blocks 23/33/43, window spec 8/4/16/8). The sam2 README lists
  sam2.1_hiera_large at 224.4M; that count includes the video memory modules, so `Sam2VideoModel` is
  compared, and the image-only `Sam2Model` brgen loads must be a strict subset of its parameter names.
"""

import pytest
import torch
from transformers import (
    BertConfig,
    GroundingDinoConfig,
    GroundingDinoForObjectDetection,
    Mask2FormerConfig,
    Mask2FormerForUniversalSegmentation,
    Sam2Config,
    Sam2HieraDetConfig,
    Sam2Model,
    Sam2VideoConfig,
    Sam2VideoModel,
    Sam2VisionConfig,
    SwinConfig,
)


def on_meta(model_class, config):
    with torch.device("meta"):
        return model_class(config)


def parameter_count(module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def sam21_large_vision() -> Sam2VisionConfig:
    hiera = Sam2HieraDetConfig(
        hidden_size=144,
        num_attention_heads=2,
        blocks_per_stage=[2, 6, 36, 4],
        embed_dim_per_stage=[144, 288, 576, 1152],
        num_attention_heads_per_stage=[2, 4, 8, 16],
        window_size_per_stage=[8, 4, 16, 8],
        global_attention_blocks=[23, 33, 43],
        window_positional_embedding_background_size=[7, 7],
    )
    return Sam2VisionConfig(backbone_config=hiera, backbone_channel_list=[1152, 576, 288, 144])


def test_mask2former_swin_large_count():
    swin = SwinConfig(
        embed_dim=192, depths=[2, 2, 18, 2], num_heads=[6, 12, 24, 48], window_size=12, image_size=384,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    model = on_meta(Mask2FormerForUniversalSegmentation, Mask2FormerConfig(backbone_config=swin, num_queries=200, num_labels=133))
    backbone = parameter_count(model.model.pixel_level_module.encoder)
    classifier_head = 1536 * 1000 + 1000
    assert backbone + classifier_head == pytest.approx(197e6, rel=0.005)


def test_grounding_dino_swin_base_count():
    swin = SwinConfig(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=12, image_size=384, out_indices=[2, 3, 4])
    config = GroundingDinoConfig(backbone_config=swin, text_config=BertConfig(), num_queries=900, max_text_len=256)
    count = parameter_count(on_meta(GroundingDinoForObjectDetection, config))
    assert count == pytest.approx(232e6, rel=0.005)


def test_sam21_hiera_large_count():
    video = on_meta(Sam2VideoModel, Sam2VideoConfig(vision_config=sam21_large_vision()))
    image = on_meta(Sam2Model, Sam2Config(vision_config=sam21_large_vision()))
    video_shapes = {name: tuple(parameter.shape) for name, parameter in video.named_parameters()}
    image_shapes = {name: tuple(parameter.shape) for name, parameter in image.named_parameters()}
    assert parameter_count(video) == pytest.approx(224.4e6, rel=0.005)
    assert set(image_shapes) < set(video_shapes)
    assert all(video_shapes[name] == shape for name, shape in image_shapes.items())
