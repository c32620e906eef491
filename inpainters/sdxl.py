"""SDXL inpainting: diffusers' `StableDiffusionXLInpaintPipeline` with the 9-channel inpainting UNet.

Weights: the diffusers folder of `diffusers/stable-diffusion-xl-1.0-inpainting-0.1` (model_index.json, unet,
vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2, scheduler), loaded with `local_files_only`.
Input contract: RGB images and masks with white (255) = repaint, sides multiples of 8; the photo is resized
to the working size (about 1024x1024 pixels by default) and the output resized back.

The invisible watermark is off (`add_watermarker=False`): its pattern would be a shortcut for a
detector. The VAE round trip changes pixels outside the mask, so the inpaint stage pastes the real photo
back. `padding_mask_crop` (off by default) makes the pipeline inpaint only a crop around the mask.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from inpainters.base import MethodError
from inpainters.diffusion import (
    DIFFUSION_PARAMETERS,
    DiffusionInpainter,
    load_pretrained,
    make_scheduler,
    optimize_modules,
    seeded_generators,
    weight_variant,
)
from inpainters.prompts import Prompt
from inpainters.weights import resolve


class SDXLInpainter(DiffusionInpainter):
    name = "sdxl"
    token = "SDXL"
    # `variant`: `auto` reads it from the folder's file names (`fp16` for what `brgen weights fetch` downloads).
    parameters = {**DIFFUSION_PARAMETERS, "strength": 0.9999, "padding_mask_crop": None, "variant": "auto"}

    def __init__(self, params=None, device="auto"):
        super().__init__(params, device)
        strength = self.params["strength"]
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 < strength <= 1:
            raise MethodError(f"sdxl: `strength` must be a number in (0, 1], got {strength!r}")
        crop = self.params["padding_mask_crop"]
        if crop is not None and (isinstance(crop, bool) or not isinstance(crop, int) or crop < 0):
            raise MethodError(f"sdxl: `padding_mask_crop` must be a margin in pixels (an integer >= 0) or null, got {crop!r}")

    def weight_folders(self) -> dict[str, Path]:
        return {"pipeline": resolve(self.name, "pipeline", self.params["weights"])}

    def variant(self) -> str | None:
        variant = self.params["variant"]
        return weight_variant(self.folders["pipeline"]) if variant == "auto" else variant

    def weight_files(self, role: str, folder: Path) -> dict[str, dict]:
        """Return the weight files of the chosen `variant` only, because the repository ships fp32 and fp16 copies."""
        variant = self.variant()
        entries = super().weight_files(role, folder)
        if variant:
            return {name: entry for name, entry in entries.items() if f".{variant}." in name}
        return {name: entry for name, entry in entries.items() if Path(name).name.count(".") == 1}

    def build_pipeline(self):
        from diffusers import StableDiffusionXLInpaintPipeline

        logging.getLogger("diffusers.models.modeling_utils").addFilter(_drop_empty_float32_warning)

        pipeline = load_pretrained(
            StableDiffusionXLInpaintPipeline, self.folders["pipeline"], self.torch_dtype(), variant=self.variant(), add_watermarker=False
        )
        return self.assemble(pipeline)

    def assemble(self, pipeline):
        """Set the recipe's scheduler on a loaded pipeline, move it to the device and apply the speed settings."""
        pipeline.scheduler = make_scheduler(self.params["scheduler"], pipeline.scheduler)
        pipeline.to(self.device)
        (pipeline.unet,) = optimize_modules([pipeline.unet], self.device, self.params["compile"])
        pipeline.set_progress_bar_config(disable=True)
        return pipeline

    def generate(self, images: np.ndarray, holes: np.ndarray, prompts: list[Prompt], seeds: list[int]) -> np.ndarray:
        height, width = images.shape[1:3]
        negatives = [prompt.negative for prompt in prompts]
        crop = self.params["padding_mask_crop"]
        output = self.pipeline(
            prompt=[prompt.text for prompt in prompts],
            # None lets SDXL use zero embeddings, its default for an empty negative prompt.
            negative_prompt=negatives if any(negatives) else None,
            image=[Image.fromarray(image) for image in images],
            mask_image=[Image.fromarray(hole.astype(np.uint8) * 255) for hole in holes],
            height=height,
            width=width,
            padding_mask_crop=crop,
            strength=float(self.params["strength"]),
            num_inference_steps=self.params["steps"],
            guidance_scale=float(self.params["guidance"]),
            generator=seeded_generators(seeds),
            # The pipeline's own paste-back for `padding_mask_crop` works on PIL images only.
            output_type="pil" if crop is not None else "np",
        ).images
        if crop is not None:
            return np.stack([np.asarray(image.convert("RGB")) for image in output])
        return (np.clip(output, 0, 1) * 255).round().astype(np.uint8)


def _drop_empty_float32_warning(record: logging.LogRecord) -> bool:
    """Drop diffusers' warning that no VAE module must stay in float32 (an empty list).

    diffusers 0.42's SDXL inpainting pipeline moves its VAE to float32 before every encoding when the VAE
    config sets `force_upcast`, and each move logs this warning, twice per batch.
    """
    return not record.getMessage().startswith("There are modules in AutoencoderKL that should be kept in float32: []")
