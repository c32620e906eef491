"""Tiny, randomly initialised weight folders in the official layouts of SDXL, BrushNet and PowerPaint v2.

Every folder is written with `save_pretrained` (or, for PowerPaint's text encoder, in the official
`pytorch_model.bin` format), so the tests run brgen's real loading code. The tokenizers read a vocabulary
of single characters written here: nothing comes from the hub.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLInpaintPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from inpainters.brushnet_model import BrushNetModel, config_from_unet

MAX_TOKENS = 77
TEXT_DIM = 32


def write_tokenizer(folder: Path) -> CLIPTokenizer:
    """A CLIP tokenizer whose vocabulary is single characters (with and without CLIP's end-of-word mark)."""
    folder.mkdir(parents=True, exist_ok=True)
    vocabulary = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for character in string.ascii_lowercase + string.digits + ",.!-_'":
        vocabulary.setdefault(character, len(vocabulary))
        vocabulary.setdefault(character + "</w>", len(vocabulary))
    (folder / "vocab.json").write_text(json.dumps(vocabulary))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=MAX_TOKENS)
    tokenizer.save_pretrained(folder)
    return tokenizer


def text_config(vocabulary: int) -> CLIPTextConfig:
    return CLIPTextConfig(vocab_size=vocabulary, hidden_size=TEXT_DIM, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                          max_position_embeddings=MAX_TOKENS, projection_dim=TEXT_DIM, bos_token_id=0, eos_token_id=1, pad_token_id=1)


def tiny_vae() -> AutoencoderKL:
    """A VAE with four blocks, so latents are 1/8 of the image size as in Stable Diffusion."""
    return AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         latent_channels=4, norm_num_groups=8, layers_per_block=1, sample_size=32)


def tiny_unet(in_channels: int = 4, xl: bool = False, blocks: int = 2) -> UNet2DConditionModel:
    down = ("CrossAttnDownBlock2D",) * (blocks - 1) + ("DownBlock2D",)
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (blocks - 1)
    extra = {}
    if xl:
        # SDXL: the two encoders' hidden states are concatenated, and six size numbers join the pooled text.
        extra = dict(addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=8 * 6 + TEXT_DIM)
    return UNet2DConditionModel(block_out_channels=(16, 32, 32, 32)[:blocks], layers_per_block=1, sample_size=8, in_channels=in_channels,
                                out_channels=4, down_block_types=down, up_block_types=up, cross_attention_dim=2 * TEXT_DIM if xl else TEXT_DIM,
                                attention_head_dim=4, norm_num_groups=8, **extra)


def scheduler() -> DDIMScheduler:
    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def write_sd15(folder: Path, unet_blocks: int = 2) -> Path:
    """A diffusers StableDiffusionPipeline folder, like realisticVisionV60B1_v51VAE."""
    torch.manual_seed(0)
    tokenizer = write_tokenizer(folder / "tokenizer")
    pipeline = StableDiffusionPipeline(vae=tiny_vae(), text_encoder=CLIPTextModel(text_config(len(tokenizer))), tokenizer=tokenizer,
                                       unet=tiny_unet(blocks=unet_blocks), scheduler=scheduler(), safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipeline.save_pretrained(folder)
    return folder


def _sdxl_text_parts(folder: Path) -> dict:
    tokenizer = write_tokenizer(folder / "tokenizer")
    tokenizer_2 = write_tokenizer(folder / "tokenizer_2")
    return dict(text_encoder=CLIPTextModel(text_config(len(tokenizer))), text_encoder_2=CLIPTextModelWithProjection(text_config(len(tokenizer))),
                tokenizer=tokenizer, tokenizer_2=tokenizer_2)


def write_sdxl_inpainting(folder: Path) -> Path:
    """A StableDiffusionXLInpaintPipeline folder with a 9-channel UNet, like stable-diffusion-xl-1.0-inpainting-0.1."""
    torch.manual_seed(0)
    pipeline = StableDiffusionXLInpaintPipeline(vae=tiny_vae(), unet=tiny_unet(in_channels=9, xl=True), scheduler=scheduler(), **_sdxl_text_parts(folder))
    pipeline.save_pretrained(folder)
    return folder


def write_sdxl_base(folder: Path) -> Path:
    """A StableDiffusionXLPipeline folder with a 4-channel UNet, like stable-diffusion-xl-base-1.0."""
    torch.manual_seed(0)
    pipeline = StableDiffusionXLPipeline(vae=tiny_vae(), unet=tiny_unet(xl=True), scheduler=scheduler(), **_sdxl_text_parts(folder))
    pipeline.save_pretrained(folder)
    return folder


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Give every parameter small random values, so BrushNet's zero convolutions contribute too."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)


def write_brushnet(folder: Path, base: Path, cross_attention: bool = False) -> Path:
    """A BrushNet checkpoint folder (config.json, diffusion_pytorch_model.safetensors) for the base's UNet."""
    unet_config = UNet2DConditionModel.load_config(base / "unet")
    brushnet = BrushNetModel.from_config(config_from_unet(unet_config, cross_attention=cross_attention))
    randomize(brushnet, seed=1)
    brushnet.save_pretrained(folder)
    return folder


def write_powerpaint(folder: Path) -> Path:
    """A PowerPaint_v2 folder: realisticVisionV60B1_v51VAE, and PowerPaint_Brushnet with the BrushNet and text encoder.

    The BrushNet folder has no config.json, and pytorch_model.bin uses the official key names of
    PowerPaint's wrapped embedding (`wrapped.weight`, `trainable_embeddings.P_*`) and keeps `position_ids`.
    """
    base = write_sd15(folder / "realisticVisionV60B1_v51VAE", unet_blocks=4)
    checkpoint = write_brushnet(folder / "PowerPaint_Brushnet", base, cross_attention=True)
    (checkpoint / "config.json").unlink()

    tokenizer = CLIPTokenizer.from_pretrained(base / "tokenizer")
    torch.manual_seed(2)
    encoder = CLIPTextModel(text_config(len(tokenizer)))
    state = {}
    for key, value in encoder.state_dict().items():
        # transformers 4.28, which PowerPaint used, named the keys `text_model.embeddings...`.
        state["text_model." + key.removeprefix("text_model.").replace("token_embedding.weight", "token_embedding.wrapped.weight")] = value
    generator = torch.Generator().manual_seed(3)
    for token in ("P_ctxt", "P_shape", "P_obj"):
        state[f"text_model.embeddings.token_embedding.trainable_embeddings.{token}"] = torch.randn(10, TEXT_DIM, generator=generator)
    state["text_model.embeddings.position_ids"] = torch.arange(MAX_TOKENS)[None]
    torch.save(state, checkpoint / "pytorch_model.bin")
    return folder
