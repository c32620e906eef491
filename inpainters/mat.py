"""MAT (Li et al., CVPR 2022): mask-aware transformer for large-hole inpainting, with brgen's own generator.

Weights: `Places_512_FullData_G.pth`, the generator state dict that lama-cleaner and IOPaint download
(md5 8ca927835fa3f5e21d65ffcb165377ed; registry entry `mat.generator`), loaded with `weights_only=True`
into `inpainters.mat_arch.MATGenerator` with `strict=True`. A state dict that also has the second stage's
noise inputs (the authors' training default) loads too: the generator is then built with them.

Input contract of the generator: RGB in -1..1, mask 1 = keep and 0 = hole (the reverse of brgen's), sides a
multiple of 512. brgen pads each photo by reflection to a square whose side is the smallest multiple of 512
not below its longer side (the working size IOPaint uses for this model), and crops the output back.

Randomness is seeded per forgery: z ~ N(0, I) (512 values) and the generator's two random 0/1 maps come
from `torch.Generator().manual_seed(seed)`, with truncation psi 1 (none), as in the authors' inference.
`noise_mode` matters only for a checkpoint with noise inputs: `const` uses the stored noise maps, which
exist at 512x512 only, so a larger working size switches to seeded `random` noise (the authors' script
does the same); the mode used is recorded per forgery.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from brgen_build.model_checks import describe_state_dict_mismatch
from inpainters.base import InpaintRequest, InpaintResult, MethodError, WeightFileInpainter
from inpainters.common import pad_batch, pad_to_square
from inpainters.mat_arch import MATConfig, MATGenerator, RandomSource
from inpainters.weights import checkpoint_record, component, load_state_dict

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
NOISE_MODES = ("const", "random", "none")


class MAT(WeightFileInpainter):
    name = "mat"
    token = "MAT"
    mask_polarity = "keep=1"
    default_batch_size = 4
    parameters = {"weights": None, "dtype": "float32", "noise_mode": "const"}
    # The architecture the weight file must match; tests swap in a smaller one.
    config = MATConfig()

    def __init__(self, params=None, device="auto"):
        super().__init__(params, device)
        if self.params["dtype"] not in DTYPES:
            raise MethodError(f"mat: dtype must be one of {', '.join(DTYPES)}, got {self.params['dtype']!r}")
        if self.params["dtype"] == "float16" and not self.device.startswith("cuda"):
            raise MethodError(f"mat: dtype float16 needs a CUDA device, got device {self.device!r}; use float32 or bfloat16")
        if self.params["noise_mode"] not in NOISE_MODES:
            raise MethodError(f"mat: noise_mode must be one of {', '.join(NOISE_MODES)}, got {self.params['noise_mode']!r}")
        self.size_multiple = self.config.img_resolution

    def load(self) -> None:
        if self.weights_path is None:
            self.check()
        state = load_state_dict(self.weights_path, self.name)
        use_noise = any(key.endswith(".noise_strength") for key in state)
        config = replace(self.config, use_noise=use_noise)
        with torch.device("meta"):
            model = MATGenerator(config)
        mismatch = describe_state_dict_mismatch(model.state_dict(), state)
        if mismatch:
            official = component(self.name, self.weights_component).file
            raise MethodError(
                f"mat: {self.weights_path} is not a state dict of MAT's {config.img_resolution}x{config.img_resolution} "
                f"generator: {mismatch}. Pass the official {official} (`brgen weights fetch mat` downloads it)"
            )
        model.load_state_dict(state, strict=True, assign=True)
        self.model = model.to(device=self.device, dtype=DTYPES[self.params["dtype"]]).eval()
        self._checkpoint = {**checkpoint_record(self.name, self.weights_component, self.weights_path), "noise_inputs": use_noise}

    def settings(self) -> dict:
        return {**super().settings(), "latent": "z ~ N(0, I) from torch.Generator().manual_seed(seed)", "truncation_psi": 1}

    @torch.inference_mode()
    def inpaint(self, requests: list[InpaintRequest]) -> list[InpaintResult]:
        images, holes, sizes, off_counts = pad_batch(
            self.name, [(request.mask, request.image) for request in requests], lambda array: pad_to_square(array, self.size_multiple)
        )
        dtype = DTYPES[self.params["dtype"]]
        image_batch = torch.from_numpy(images).to(self.device).permute(0, 3, 1, 2).to(dtype).div_(127.5).sub_(1.0)
        # MAT reads the mask the other way round: 1 = keep. Reflection padding commutes with negation.
        keep_batch = torch.from_numpy(~holes).to(self.device)[:, None].to(dtype)

        side = image_batch.shape[-1]
        noise_mode = self._noise_mode(side)
        output = self.model(image_batch, keep_batch, RandomSource([request.seed for request in requests]), noise_mode)
        output = (output.float() * 127.5 + 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

        results = []
        for generated, (height, width), off_values in zip(output, sizes, off_counts):
            info = {"working_size": [side, side], "noise_mode": noise_mode}
            if off_values:
                info["mask_values_thresholded"] = off_values
            results.append(InpaintResult(np.ascontiguousarray(generated[:height, :width]), info))
        return results

    def _noise_mode(self, side: int) -> str:
        if not self.model.config.use_noise:
            return "none"
        mode = self.params["noise_mode"]
        return "random" if mode == "const" and side != self.config.img_resolution else mode

