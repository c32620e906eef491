"""BrushNet's sampling loop on a diffusers Stable Diffusion (1.5 or XL) pipeline.

The base pipeline (`StableDiffusionPipeline` or `StableDiffusionXLPipeline`, loaded from a local folder)
provides the VAE, text encoders, UNet and scheduler, and its `encode_prompt`. Per step, BrushNet reads
the noisy latents with the masked photo's latents and the mask, and its additions steer the frozen UNet
(`inpainters.brushnet_model.unet_forward`). Conditioning follows the official BrushNet pipelines: the hole
of the photo is set to black before VAE encoding, and the mask channel is 1 where the photo is kept.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor

from inpainters.brushnet_model import BrushNetModel, unet_forward
from inpainters.diffusion import step_kwargs, to_uint8


class BrushNetPipeline:
    """BrushNet on a base pipeline. `__call__` inpaints a batch of photos that share one size.

    Args:
        base: a diffusers StableDiffusionPipeline or StableDiffusionXLPipeline on the target device.
        brushnet: the BrushNet for that base (SD 1.5 or SDXL), on the same device and dtype.
        compile_modules: compile the BrushNet and the UNet pass with torch.compile.
    """

    def __init__(self, base: Any, brushnet: BrushNetModel, compile_modules: bool = False):
        self.base = base
        self.brushnet = brushnet
        self.is_xl = hasattr(base, "text_encoder_2")
        self._brushnet_call: Callable = brushnet
        self._unet_call: Callable = unet_forward
        if compile_modules:
            self._brushnet_call = torch.compile(brushnet, fullgraph=False, dynamic=False)
            self._unet_call = torch.compile(unet_forward, fullgraph=False, dynamic=False)

    @property
    def scheduler(self) -> Any:
        return self.base.scheduler

    @property
    def device(self) -> torch.device:
        return self.base.unet.device

    @torch.inference_mode()
    def __call__(
        self,
        images: np.ndarray,
        holes: np.ndarray,
        prompts: list[str],
        negative_prompts: list[str],
        generators: list[torch.Generator],
        steps: int,
        guidance: float,
        conditioning_scale: float = 1.0,
        **text_options: Any,
    ) -> np.ndarray:
        """Inpaint images [B,H,W,3] (uint8 RGB) where holes [B,H,W] are True and return [B,H,W,3] uint8.

        H and W must be multiples of 8. `generators` (one per image) draw the initial noise and the VAE's
        latent sample, in that order. `conditioning_scale` multiplies every BrushNet addition (the official
        `brushnet_conditioning_scale`, 1.0 by default). `text_options` go to `encode_prompts`.
        """
        unet, vae, scheduler = self.base.unet, self.base.vae, self.base.scheduler
        batch, height, width = holes.shape
        guided = guidance > 1.0

        unet_context, brushnet_context, added = self.encode_prompts(prompts, negative_prompts, guided, (height, width), **text_options)
        scheduler.set_timesteps(steps, device=self.device)

        latent_shape = (batch, unet.config.in_channels, height // self.base.vae_scale_factor, width // self.base.vae_scale_factor)
        latents = randn_tensor(latent_shape, generator=generators, device=self.device, dtype=unet.dtype) * scheduler.init_noise_sigma
        condition = self.encode_condition(images, holes, generators).to(unet.dtype)
        if guided:
            condition = torch.cat([condition, condition])
        extra = step_kwargs(scheduler, generators)

        for timestep in scheduler.timesteps:
            model_input = torch.cat([latents, latents]) if guided else latents
            model_input = scheduler.scale_model_input(model_input, timestep)
            additions = self._brushnet_call(model_input, timestep, brushnet_context, condition, conditioning_scale, added)
            noise = self._unet_call(unet, model_input, timestep, unet_context, additions, added)
            if guided:
                unconditional, conditional = noise.chunk(2)
                noise = unconditional + guidance * (conditional - unconditional)
            latents = scheduler.step(noise, timestep, latents, **extra, return_dict=False)[0]

        decoded = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
        return to_uint8(decoded)

    def encode_condition(self, images: np.ndarray, holes: np.ndarray, generators: list[torch.Generator]) -> torch.Tensor:
        """Return BrushNet's condition [B,5,h,w]: latents of the photo with a black hole, and the mask (1 = keep)."""
        vae = self.base.vae
        photo = torch.from_numpy(images).to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        hole = torch.from_numpy(holes).to(self.device)[:, None].float()
        masked = photo * (1.0 - hole) - hole
        posterior = vae.encode(masked.to(vae.dtype)).latent_dist
        latents = posterior.sample(generator=generators) * vae.config.scaling_factor
        keep = F.interpolate(1.0 - hole, size=latents.shape[-2:])
        return torch.cat([latents.float(), keep], dim=1)

    def encode_prompts(self, prompts: list[str], negative_prompts: list[str], guided: bool, size: tuple[int, int]):
        """Return the text conditioning: (UNet context, BrushNet context, SDXL's added conditions or None).

        Under guidance the unconditional half comes first in every tensor. BrushNet reads the same text as
        the UNet. An all-empty negative prompt is passed as None, so SDXL uses zero embeddings for it.
        """
        negatives = negative_prompts if any(negative_prompts) else None
        if not self.is_xl:
            context, negative = self.base.encode_prompt(prompts, self.device, 1, guided, negative_prompt=negatives)
            context = torch.cat([negative, context]) if guided else context
            return context, context, None

        context, negative, pooled, negative_pooled = self.base.encode_prompt(
            prompt=prompts, device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=guided, negative_prompt=negatives
        )
        time_ids = self.base._get_add_time_ids(
            size, (0, 0), size, dtype=context.dtype, text_encoder_projection_dim=self.base.text_encoder_2.config.projection_dim
        ).to(self.device).repeat(len(prompts), 1)
        if guided:
            context = torch.cat([negative, context])
            pooled = torch.cat([negative_pooled, pooled])
            time_ids = torch.cat([time_ids, time_ids])
        return context, context, {"text_embeds": pooled, "time_ids": time_ids}
