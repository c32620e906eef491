"""Shared parts of the diffusion methods (sdxl, brushnet, powerpaint).

Each method resizes a photo to its working size (sides multiples of 8, as the VAE needs) and writes a
prompt from the mask record. It runs its pipeline on a batch of photos that share the working size and
resizes the result back to the photo's size. The inpaint stage then pastes the real photo back outside
the mask. Noise comes from one CPU `torch.Generator` per item, seeded with the item's seed, so an item's
noise is the same in any batch and on any device. Its output can still differ by rounding between
batch sizes and devices.

Speed: models load once per process, in bfloat16 on GPUs that support it (float16 on others, float32 on
CPU). Attention runs through PyTorch's scaled_dot_product_attention, the default of diffusers 0.42 and
transformers 5. The UNet can be compiled with `torch.compile`, and the scheduler and step count come
from the recipe.
"""

from __future__ import annotations

import gc
import hashlib
import inspect
import logging
import math
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from inpainters.base import Inpainter, InpaintRequest, InpaintResult, MethodError
from inpainters.common import binarize_mask, resize_hole, resize_image
from inpainters.prompts import PROMPT_PARAMETERS, Prompt, PromptBuilder

logger = logging.getLogger(__name__)

DIFFUSION_PARAMETERS: dict[str, Any] = {
    "weights": None,
    "dtype": "auto",
    "compile": False,
    "steps": 50,
    "guidance": 7.5,
    "scheduler": None,
    "working_size": 1024,
    "resize": "area",
    **PROMPT_PARAMETERS,
}
"""Recipe parameters of every diffusion method, with their defaults.

dtype: auto, float32, float16 or bfloat16; auto is bfloat16 on GPUs that support it, float16 on other
    GPUs and float32 on CPU.
compile: compile the UNet (and BrushNet) with torch.compile; the first batch of each working size is slow.
steps: number of denoising steps. guidance: classifier-free guidance scale (1 or less turns it off).
scheduler: one of SCHEDULERS, or None for the scheduler saved with the weights.
working_size: the input size of the model, a number of pixels (see `resize`) or [width, height] for every photo.
resize: with a number, `area` keeps the photo's aspect ratio at about working_size**2 pixels, `short_side`
    and `long_side` scale that side to working_size.
"""

SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-ancestral": "EulerAncestralDiscreteScheduler",
    "pndm": "PNDMScheduler",
    "unipc": "UniPCMultistepScheduler",
}
"""Recipe names of the supported diffusers schedulers."""

# Parameters read per batch, not when the pipeline is built: changing them reuses a loaded pipeline.
CALL_PARAMETERS = frozenset({"steps", "guidance", "working_size", "resize", "batch_size", "strength", "padding_mask_crop", *PROMPT_PARAMETERS})

RESIZE_MODES = ("area", "short_side", "long_side")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

_loaded: tuple[tuple, Any] | None = None
_digests: dict[tuple[str, int, int], str] = {}


class DiffusionInpainter(Inpainter):
    """Base class of the diffusion methods: subclasses find their weights, build a pipeline and run it.

    Subclasses implement `weight_folders` (a mapping of role to folder that raises MethodError when a
    folder is missing), `build_pipeline` and `generate`.
    """

    size_multiple = 8
    default_batch_size = 4
    text_guided = True
    parameters = DIFFUSION_PARAMETERS
    call_parameters = CALL_PARAMETERS

    def __init__(self, params: dict[str, Any] | None = None, device: str = "auto"):
        super().__init__(params, device)
        if self.params["working_size"] is None:
            self.params["working_size"] = self.default_working_size()
        self._validate()
        self.prompts = PromptBuilder(self.params, self.device)
        self.pipeline = None
        self.folders: dict[str, Path] = {}
        self._checkpoint: dict = {}

    # The input contract.

    def default_working_size(self) -> int:
        """Return the working size used when the recipe sets none."""
        return DIFFUSION_PARAMETERS["working_size"]

    def working_size(self, height: int, width: int) -> tuple[int, int]:
        """Return the (height, width) at which the model inpaints a photo of this size."""
        size = self.params["working_size"]
        if isinstance(size, (list, tuple)):
            return int(size[1]), int(size[0])
        mode = self.params["resize"]
        if mode == "area":
            scale = size / math.sqrt(height * width)
        elif mode == "short_side":
            scale = size / min(height, width)
        else:
            scale = size / max(height, width)
        multiple = self.size_multiple
        return (max(multiple, round(height * scale / multiple) * multiple), max(multiple, round(width * scale / multiple) * multiple))

    def batch_key(self, height: int, width: int) -> tuple[int, int]:
        return self.working_size(height, width)

    def torch_dtype(self) -> torch.dtype:
        name = self.params["dtype"]
        if name != "auto":
            return DTYPES[name]
        if self.device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if self.device.startswith("mps"):
            return torch.float16
        return torch.float32

    # Loading.

    def weight_folders(self) -> dict[str, Path]:
        raise NotImplementedError

    def build_pipeline(self) -> Any:
        raise NotImplementedError

    def check(self) -> None:
        self.folders = self.weight_folders()
        self.prompts.check()

    def load(self) -> None:
        if not self.folders:
            self.check()
        self.pipeline = load_once(self.pipeline_key(), self._build)
        self._checkpoint = {
            "folders": {role: str(path) for role, path in self.folders.items()},
            "files": {f"{role}/{name}": entry for role, path in self.folders.items() for name, entry in self.weight_files(role, path).items()},
        }
        if self.prompts.captioner is not None:
            if self.prompts.captioner.model is None:
                self.prompts.captioner.load()
            config = self.prompts.captioner.folder / "config.json"
            self._checkpoint["captioner"] = {"folder": str(config.parent), "config_sha256": file_sha256(config)}

    def pipeline_key(self) -> tuple:
        """Return the cache key of the pipeline: the class, folders, device, dtype and every parameter read at build time."""
        built_from = {key: repr(value) for key, value in self.params.items() if key not in self.call_parameters}
        folders = tuple(sorted((role, str(path)) for role, path in self.folders.items()))
        return (type(self).__name__, folders, self.device, str(self.torch_dtype()), tuple(sorted(built_from.items())))

    def _build(self) -> Any:
        logger.info("%s: loading %s on %s in %s", self.name, ", ".join(f"{role} {path}" for role, path in self.folders.items()), self.device, self.torch_dtype())
        return self.build_pipeline()

    def weight_files(self, role: str, folder: Path) -> dict[str, dict]:
        """Return the size and sha256 of the weight files under `folder` that loading reads (all of them by default)."""
        entries = {}
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix in (".safetensors", ".bin", ".pt", ".pth", ".ckpt"):
                entries[path.relative_to(folder).as_posix()] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
        return entries

    def checkpoint(self) -> dict:
        return self._checkpoint

    def settings(self) -> dict:
        """Return the recipe parameters of the method without the paths, which the checkpoint record keeps."""
        return {key: value for key, value in self.params.items() if key not in ("weights", "base", "captioner")}

    # Inference.

    @torch.inference_mode()
    def inpaint(self, requests: list[InpaintRequest]) -> list[InpaintResult]:
        """Inpaint requests batch by batch of one working size; results come back in request order."""
        if self.pipeline is None:
            self.load()
        results: list[InpaintResult | None] = [None] * len(requests)
        groups: dict[tuple[int, int], list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(self.working_size(*request.image.shape[:2]), []).append(index)
        for size, indices in groups.items():
            for index, result in zip(indices, self._inpaint_group([requests[i] for i in indices], size)):
                results[index] = result
        return results

    def _inpaint_group(self, requests: list[InpaintRequest], size: tuple[int, int]) -> list[InpaintResult]:
        images, holes, off_values = [], [], []
        for request in requests:
            hole, off = binarize_mask(request.mask)
            images.append(resize_image(request.image, size))
            holes.append(resize_hole(hole, size))
            off_values.append(off)
        seeds = [request.seed for request in requests]
        prompts = self.prompts.build([request.region for request in requests], seeds, [request.image for request in requests])

        generated = self.generate(np.stack(images), np.stack(holes), prompts, seeds)

        results = []
        for request, image, prompt, off in zip(requests, generated, prompts, off_values):
            info = {**prompt.record(), **self.generation_info(prompt), "working_size": [size[1], size[0]]}
            if off:
                info["mask_values_thresholded"] = off
            results.append(InpaintResult(resize_image(image, request.image.shape[:2]), info))
        return results

    def generate(self, images: np.ndarray, holes: np.ndarray, prompts: list[Prompt], seeds: list[int]) -> np.ndarray:
        """Inpaint a batch at working size (images [B,H,W,3] uint8 RGB, holes [B,H,W] bool) and return [B,H,W,3] uint8."""
        raise NotImplementedError

    def generation_info(self, prompt: Prompt) -> dict:
        """Return the per-item facts beyond the prompt that the forgery record keeps."""
        return {"dtype": str(self.torch_dtype()).replace("torch.", ""), "scheduler": self.scheduler_name()}

    def scheduler_name(self) -> str:
        scheduler = getattr(self.pipeline, "scheduler", None)
        return type(scheduler).__name__ if scheduler is not None else "none"

    # Checks.

    def _validate(self) -> None:
        params = self.params
        _require(isinstance(params["steps"], int) and not isinstance(params["steps"], bool) and params["steps"] >= 1, self.name, "steps", "a positive integer", params["steps"])
        _require(_is_number(params["guidance"]) and params["guidance"] >= 0, self.name, "guidance", "a number >= 0", params["guidance"])
        _require(params["dtype"] == "auto" or params["dtype"] in DTYPES, self.name, "dtype", f"auto or one of {', '.join(DTYPES)}", params["dtype"])
        _require(isinstance(params["compile"], bool), self.name, "compile", "true or false", params["compile"])
        _require(params["scheduler"] is None or params["scheduler"] in SCHEDULERS, self.name, "scheduler", f"one of {', '.join(SCHEDULERS)}", params["scheduler"])
        _require(params["resize"] in RESIZE_MODES, self.name, "resize", f"one of {', '.join(RESIZE_MODES)}", params["resize"])
        size = params["working_size"]
        if isinstance(size, (list, tuple)):
            valid = len(size) == 2 and all(isinstance(v, int) and v >= 8 and v % self.size_multiple == 0 for v in size)
            _require(valid, self.name, "working_size", f"[width, height] with sides that are multiples of {self.size_multiple}", size)
        else:
            _require(isinstance(size, int) and not isinstance(size, bool) and size >= 64, self.name, "working_size", "an integer of at least 64 pixels or [width, height]", size)


def weight_variant(folder: Path) -> str | None:
    """Return `fp16` when a diffusers folder has only fp16 weight files (what `brgen weights fetch` downloads), else None.

    The UNet decides for a pipeline folder; a model folder (BrushNet) is looked at directly.
    """
    models = folder / "unet" if (folder / "unet").is_dir() else folder
    names = [path.name for path in models.glob("diffusion_pytorch_model*")]
    if any(".fp16." in name for name in names) and not any(name.count(".") == 1 for name in names):
        return "fp16"
    return None


def load_pretrained(cls: Any, folder: Path, dtype: torch.dtype, **kwargs: Any) -> Any:
    """Load `cls.from_pretrained(folder)` in `dtype`, from local files only.

    The weight variant (`fp16` file names) is read from the folder unless `variant` is given. diffusers 0.42
    deprecates `torch_dtype` in favour of `dtype`, which older releases lack, so brgen passes `torch_dtype`
    and hides that one deprecation warning.
    """
    kwargs.setdefault("variant", weight_variant(folder))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`torch_dtype` is deprecated", category=FutureWarning)
        return cls.from_pretrained(folder, torch_dtype=dtype, local_files_only=True, **kwargs)


def make_scheduler(name: str | None, current: Any) -> Any:
    """Return the scheduler named in the recipe, configured like `current` (the one saved with the weights)."""
    if name is None:
        return current
    import diffusers

    return getattr(diffusers, SCHEDULERS[name]).from_config(current.config)


def seeded_generators(seeds: list[int]) -> list[torch.Generator]:
    """Return one CPU generator per item, so that noise depends only on the item's seed, not on its batch or device."""
    return [torch.Generator("cpu").manual_seed(int(seed)) for seed in seeds]


def step_kwargs(scheduler: Any, generators: list[torch.Generator]) -> dict:
    """Return the generator argument of `scheduler.step`, for the stochastic schedulers that take one."""
    return {"generator": generators} if "generator" in inspect.signature(scheduler.step).parameters else {}


def optimize_modules(modules: list[torch.nn.Module], device: str, compile_modules: bool) -> list[torch.nn.Module]:
    """Put convolution-heavy modules in channels-last layout on CUDA and compile them when asked."""
    optimized = []
    for module in modules:
        if device.startswith("cuda"):
            module.to(memory_format=torch.channels_last)
        if compile_modules:
            module = torch.compile(module, fullgraph=False, dynamic=False)
        optimized.append(module)
    return optimized


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Convert images [B,3,H,W] in -1..1 to uint8 arrays [B,H,W,3]."""
    images = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return images.permute(0, 2, 3, 1).cpu().numpy()


def load_once(key: tuple, build: Callable[[], Any]) -> Any:
    """Return the pipeline built for `key`, building it at most once per process.

    The process keeps one pipeline. Building another drops the reference to the previous one first, so a
    process that runs several methods one after the other frees the previous weights once nothing else
    refers to them.
    """
    global _loaded
    if _loaded is not None and _loaded[0] == key:
        return _loaded[1]
    _loaded = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    pipeline = build()
    _loaded = (key, pipeline)
    return pipeline


def file_sha256(path: Path) -> str:
    """Return the sha256 of a file, computed once per process for a given path, size and modification time."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
        _digests[key] = digest.hexdigest()
    return _digests[key]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _require(condition: bool, method: str, key: str, expected: str, value: Any) -> None:
    if not condition:
        raise MethodError(f"{method}: `{key}` must be {expected}, got {value!r}")
