"""Tiny randomly initialised CLIP and DINO folders, saved the way the real checkpoints are laid out."""

import json
from pathlib import Path

import torch
import transformers

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def pil_processor_class(name: str):
    """transformers 5 names its torchvision-free image processors `<Name>Pil`; version 4 has only those."""
    return getattr(transformers, f"{name}Pil", None) or getattr(transformers, name)


def write_clip_vocabulary(folder: Path) -> int:
    """Write a CLIP BPE vocabulary of single letters (no merges) and return its size."""
    vocabulary = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for letter in LETTERS:
        vocabulary[letter] = len(vocabulary)
        vocabulary[letter + "</w>"] = len(vocabulary)
    (folder / "vocab.json").write_text(json.dumps(vocabulary))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return len(vocabulary)


def save_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """Save a CLIP model (hidden size 32, 2 layers, 32x32 images) with its tokenizer and image processor."""
    folder.mkdir(parents=True, exist_ok=True)
    vocabulary_size = write_clip_vocabulary(folder)
    tokenizer = transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    config = transformers.CLIPConfig(
        text_config={
            "vocab_size": vocabulary_size, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 77, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1,
        },
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(seed)
    transformers.CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    image_processor = pil_processor_class("CLIPImageProcessor")(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    image_processor.save_pretrained(folder)
    return folder


def save_tiny_dino(folder: Path, seed: int = 0) -> Path:
    """Save a ViT (the architecture of facebook/dino-vitb16) with hidden size 32, 2 layers, 32x32 images."""
    folder.mkdir(parents=True, exist_ok=True)
    config = transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, image_size=32, patch_size=8, add_pooling_layer=False
    )
    torch.manual_seed(seed)
    transformers.ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    pil_processor_class("ViTImageProcessor")(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder
