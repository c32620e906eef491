"""PowerPaint v2 (Zhuang et al., 2024): BrushNet with cross-attention and learned task prompts, on SD 1.5.

Weights: the `PowerPaint_v2` folder of https://huggingface.co/JunhaoZhuang/PowerPaint_v2, with
`PowerPaint_Brushnet/diffusion_pytorch_model.safetensors` (the BrushNet), `PowerPaint_Brushnet/pytorch_model.bin`
(the text encoder of the BrushNet branch, with the task tokens) and the diffusers-format base
`realisticVisionV60B1_v51VAE` (read from the folder itself unless `base` names another folder).

How the official code (open-mmlab/PowerPaint, app.py with `--version ppt-v2`) runs it, and brgen with it:
- The BrushNet branch has its own CLIP text encoder. Three learned task tokens, `P_ctxt`, `P_shape` and
  `P_obj`, stand for 10 token vectors each. The tokenizer gets 30 added tokens (`P_obj_0` ... `P_obj_9`),
  and the encoder's embedding table gets their vectors from the checkpoint.
- The BrushNet branch reads only task prompts: for the text-guided task promptA = promptB = "P_obj", and the
  negative task prompts are "P_obj" too. The user's prompt goes to the UNet's own text encoder.
- The fitting degree f blends the branch's text embeddings: f * embed(promptA) + (1 - f) * embed(promptB),
  and the same for the negatives. It matters only for the shape-guided task, where promptA = "P_shape" and
  promptB = "P_ctxt"; with promptA = promptB it changes nothing.
- Defaults follow app.py: UniPC, 45 steps, guidance 7.5, conditioning scale 1.0, the photo's short side
  resized to 640, and the hole set to black before encoding.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import torch

from brgen_build.model_checks import describe_state_dict_mismatch
from inpainters.base import MethodError
from inpainters.brushnet import load_base_pipeline, prepare_base
from inpainters.brushnet_model import config_from_unet, load_brushnet
from inpainters.brushnet_pipeline import BrushNetPipeline
from inpainters.diffusion import CALL_PARAMETERS, DIFFUSION_PARAMETERS, DiffusionInpainter, optimize_modules, seeded_generators
from inpainters.prompts import Prompt
from inpainters.weights import resolve

logger = logging.getLogger(__name__)

# Folders inside a clone of the PowerPaint_v2 repository.
BASE_FOLDER = "realisticVisionV60B1_v51VAE"
BRUSHNET_DIR = "PowerPaint_Brushnet"
TEXT_ENCODER_FILE = "pytorch_model.bin"

TASK_TOKENS = ("P_ctxt", "P_shape", "P_obj")
VECTORS_PER_TOKEN = 10

# task -> (promptA, promptB, negative promptA, negative promptB, text appended to the UNet's prompt), from app.py.
TASKS = {
    "text-guided": ("P_obj", "P_obj", "P_obj", "P_obj", ""),
    "shape-guided": ("P_shape", "P_ctxt", "P_shape", "P_ctxt", ""),
    "object-removal": ("P_ctxt", "P_ctxt", "P_obj", "P_obj", " empty scene blur"),
}

_EMBEDDING = "embeddings.token_embedding"


class PowerPaintInpainter(DiffusionInpainter):
    name = "powerpaint"
    token = "PowerPaint"
    parameters = {
        **DIFFUSION_PARAMETERS,
        "base": None,
        "task": "text-guided",
        "fitting_degree": 1.0,
        "conditioning_scale": 1.0,
        "scheduler": "unipc",
        "steps": 45,
        "working_size": 640,
        "resize": "short_side",
    }
    call_parameters = CALL_PARAMETERS | {"conditioning_scale", "task", "fitting_degree"}

    def __init__(self, params=None, device="auto"):
        super().__init__(params, device)
        if self.params["task"] not in TASKS:
            raise MethodError(f"powerpaint: `task` must be one of {', '.join(TASKS)}, got {self.params['task']!r}")
        for key in ("fitting_degree", "conditioning_scale"):
            value = self.params[key]
            high = 1.0 if key == "fitting_degree" else float("inf")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= high:
                raise MethodError(f"powerpaint: `{key}` must be a number {'in 0..1' if high == 1.0 else '>= 0'}, got {value!r}")

    def weight_folders(self) -> dict[str, Path]:
        """Resolve the PowerPaint_Brushnet folder and the base model through the weight registry.

        `weights` may also name a clone of the whole PowerPaint_v2 repository; then its two folders are used,
        unless `base` names another base model.
        """
        checkpoint, base = self.params["weights"], self.params["base"]
        base_parameter = "base" if base else "weights"
        if checkpoint and (Path(checkpoint) / BRUSHNET_DIR).is_dir():
            clone = Path(checkpoint)
            checkpoint = clone / BRUSHNET_DIR
            base = base or clone / BASE_FOLDER
        return {"powerpaint": resolve(self.name, "powerpaint", checkpoint), "base": resolve(self.name, "base", base, base_parameter)}

    def build_pipeline(self) -> "PowerPaintPipeline":
        dtype = self.torch_dtype()
        base = load_base_pipeline(self.folders["base"], False, dtype)
        checkpoint = self.folders["powerpaint"]
        # The official app derives this BrushNet's config from the SD 1.5 UNet. A config.json in the folder wins.
        config = None if (checkpoint / "config.json").is_file() else config_from_unet(base.unet.config, cross_attention=True)
        brushnet = load_brushnet(checkpoint, dtype, config)
        tokenizer, text_encoder = load_task_text_encoder(self.folders["base"], checkpoint / TEXT_ENCODER_FILE)
        return self.assemble(base, brushnet, tokenizer, text_encoder)

    def assemble(self, base, brushnet, tokenizer, text_encoder) -> "PowerPaintPipeline":
        """Join the loaded parts on the device, with the recipe's scheduler, task and speed settings."""
        prepare_base(base, self.params["scheduler"], self.device)
        brushnet.to(self.device)
        text_encoder.to(self.device, base.unet.dtype)
        optimize_modules([base.unet, brushnet], self.device, compile_modules=False)
        return PowerPaintPipeline(base, brushnet, tokenizer, text_encoder, compile_modules=self.params["compile"])

    def generate(self, images: np.ndarray, holes: np.ndarray, prompts: list[Prompt], seeds: list[int]) -> np.ndarray:
        return self.pipeline(
            images,
            holes,
            [self.unet_prompt(prompt) for prompt in prompts],
            [prompt.negative for prompt in prompts],
            seeded_generators(seeds),
            self.params["steps"],
            float(self.params["guidance"]),
            float(self.params["conditioning_scale"]),
            task_prompts=TASKS[self.params["task"]][:4],
            fitting_degree=float(self.params["fitting_degree"]),
        )

    def unet_prompt(self, prompt: Prompt) -> str:
        return prompt.text + TASKS[self.params["task"]][4]

    def generation_info(self, prompt: Prompt) -> dict:
        prompt_a, prompt_b, negative_a, negative_b, _ = TASKS[self.params["task"]]
        return {
            **super().generation_info(prompt),
            "task": self.params["task"],
            "unet_prompt": self.unet_prompt(prompt),
            "brushnet_prompts": {"promptA": prompt_a, "promptB": prompt_b, "negative_promptA": negative_a, "negative_promptB": negative_b},
            "fitting_degree": float(self.params["fitting_degree"]),
        }


class PowerPaintPipeline(BrushNetPipeline):
    """BrushNetPipeline whose BrushNet branch reads blended task-prompt embeddings from its own text encoder."""

    def __init__(self, base, brushnet, tokenizer, text_encoder, compile_modules: bool = False):
        super().__init__(base, brushnet, compile_modules)
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder

    def encode_prompts(self, prompts: list[str], negative_prompts: list[str], guided: bool, size: tuple[int, int],
                       task_prompts: tuple[str, str, str, str] = TASKS["text-guided"][:4], fitting_degree: float = 1.0):
        """Return the UNet's context from the prompts and the BrushNet's from the blended task prompts (A, B, negative A, negative B)."""
        unet_context, _, _ = super().encode_prompts(prompts, negative_prompts, guided, size)
        prompt_a, prompt_b, negative_a, negative_b = task_prompts
        context = self.blend(prompt_a, prompt_b, fitting_degree).expand(len(prompts), -1, -1)
        if guided:
            negative = self.blend(negative_a, negative_b, fitting_degree).expand(len(prompts), -1, -1)
            context = torch.cat([negative, context])
        return unet_context, context, None

    def blend(self, prompt_a: str, prompt_b: str, fitting_degree: float) -> torch.Tensor:
        """Return fitting_degree * embed(prompt_a) + (1 - fitting_degree) * embed(prompt_b), shape [1, 77, D]."""
        embedding_a = self.embed(prompt_a)
        if prompt_b == prompt_a:
            return embedding_a
        return embedding_a * fitting_degree + (1.0 - fitting_degree) * self.embed(prompt_b)

    def embed(self, text: str) -> torch.Tensor:
        """Return the branch text encoder's last hidden states [1, 77, D] for a task prompt."""
        ids = self.tokenizer(
            expand_task_tokens(text), padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        return self.text_encoder(ids.to(self.device))[0]


def expand_task_tokens(text: str) -> str:
    """Write each task token as its 10 added tokens: "P_obj" becomes "P_obj_0 P_obj_1 ... P_obj_9"."""
    pattern = r"\b(" + "|".join(TASK_TOKENS) + r")\b"
    return re.sub(pattern, lambda match: " ".join(f"{match.group(1)}_{index}" for index in range(VECTORS_PER_TOKEN)), text)


def task_token_names() -> list[str]:
    """Return the 30 added tokens in the order the official code adds them (P_ctxt_0 ... P_obj_9)."""
    return [f"{token}_{index}" for token in TASK_TOKENS for index in range(VECTORS_PER_TOKEN)]


def load_task_text_encoder(base_folder: Path, checkpoint: Path):
    """Build PowerPaint's BrushNet-branch tokenizer and text encoder from the base folder and pytorch_model.bin.

    The official checkpoint stores the encoder of PowerPaint's `EmbeddingLayerWithFixes`: the vocabulary's
    embedding table as `...token_embedding.wrapped.weight` and the task tokens as
    `...token_embedding.trainable_embeddings.<token>` [10, D]. brgen appends the task vectors to the table
    as rows of the added tokens, which computes the same embeddings. A table that already has the extra
    rows is read as it is. Returns (tokenizer, text encoder) on the CPU in float32.
    """
    from transformers import AddedToken, CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(base_folder / "tokenizer", local_files_only=True)
    vocabulary = len(tokenizer)
    tokenizer.add_tokens([AddedToken(name, normalized=False) for name in task_token_names()])
    first_id = tokenizer.convert_tokens_to_ids(task_token_names()[0])
    if first_id != vocabulary:
        raise MethodError(f"powerpaint: the tokenizer of {base_folder} already contains PowerPaint's task tokens; use a plain SD 1.5 tokenizer")

    encoder = CLIPTextModel.from_pretrained(base_folder / "text_encoder", local_files_only=True)
    prefix = "text_model." if any(key.startswith("text_model.") for key in encoder.state_dict()) else ""
    state = convert_text_encoder_state(torch.load(checkpoint, map_location="cpu", weights_only=True), vocabulary, checkpoint, prefix)
    encoder.resize_token_embeddings(vocabulary + len(task_token_names()), mean_resizing=False)
    # Parameters missing from the checkpoint keep the base model's values, so only the ones it has are compared.
    expected = {name: tensor for name, tensor in encoder.state_dict().items() if name in state}
    mismatch = describe_state_dict_mismatch(expected, state)
    if mismatch:
        raise MethodError(f"powerpaint: {checkpoint} does not fit the CLIP text encoder of {base_folder}: {mismatch}. Check that it is PowerPaint v2's text encoder")
    result = encoder.load_state_dict(state, strict=False)
    if result.missing_keys:
        logger.warning("powerpaint: %d text-encoder parameters are not in %s and come from %s: %s", len(result.missing_keys), checkpoint, base_folder, result.missing_keys[:5])
    return tokenizer, encoder.eval()


def convert_text_encoder_state(state: dict, vocabulary: int, source: Path, prefix: str = "") -> dict:
    """Turn PowerPaint's text-encoder state dict into a plain CLIPTextModel one with 30 extra embedding rows.

    Keys get `prefix` in place of the checkpoint's `text_model.`, because transformers 5's CLIPTextModel
    has no `text_model.` level while the one PowerPaint saved with (transformers 4.28) had.
    """
    state = {key.removeprefix("text_model."): value for key, value in state.items() if not key.endswith("embeddings.position_ids")}
    wrapped = state.pop(f"{_EMBEDDING}.wrapped.weight", None)
    if wrapped is not None:
        missing = [token for token in TASK_TOKENS if f"{_EMBEDDING}.trainable_embeddings.{token}" not in state]
        if missing:
            raise MethodError(f"powerpaint: {source} lacks the task token vectors {', '.join(missing)}")
        vectors = [state.pop(f"{_EMBEDDING}.trainable_embeddings.{token}") for token in TASK_TOKENS]
        for token, tensor in zip(TASK_TOKENS, vectors):
            if tuple(tensor.shape) != (VECTORS_PER_TOKEN, wrapped.shape[1]):
                raise MethodError(f"powerpaint: {source}: task token {token} has shape {tuple(tensor.shape)}, expected ({VECTORS_PER_TOKEN}, {wrapped.shape[1]})")
        state[f"{_EMBEDDING}.weight"] = torch.cat([wrapped, *vectors])
    table = state.get(f"{_EMBEDDING}.weight")
    expected_rows = vocabulary + len(TASK_TOKENS) * VECTORS_PER_TOKEN
    if table is None or table.shape[0] != expected_rows:
        rows = "no embedding table" if table is None else f"{table.shape[0]} embedding rows"
        raise MethodError(f"powerpaint: {source} has {rows}; expected {expected_rows} (a vocabulary of {vocabulary} and 30 task-token vectors)")
    return {prefix + key: value for key, value in state.items()}
