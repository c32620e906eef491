"""Prompts from mask records: templates, the seeded semantic perturbation and a tiny captioner."""

import numpy as np
import pytest
import torch

from inpainters.base import MethodError
from inpainters.prompts import ClassTable, PromptBuilder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STUFF = {"kind": "Stuff", "classes": [{"id": 187, "name": "sky-other-merged", "pixels": 900}, {"id": 193, "name": "grass-merged", "pixels": 400}], "bbox": [0, 0, 10, 8]}
BACKGROUND = {"kind": "Background", "classes": [{"id": 18, "name": "dog", "pixels": 300, "annotation_id": 7}], "bbox": [0, 0, 20, 20]}


def test_phrases_from_category_names():
    table = ClassTable({"wall-brick": "brick wall"}, [])
    assert table.phrase("sky-other-merged") == "sky"
    assert table.phrase("door-stuff") == "door"
    assert table.phrase("wall-brick") == "brick wall"
    assert table.phrase("traffic light") == "traffic light"


def test_templates_without_perturbation():
    builder = PromptBuilder({"prompt": {"Stuff": "a photo of {classes}", "Background": "a {object} outdoors"}, "perturbation": 0.0, "negative_prompt": "blurry"})
    stuff, background = builder.build([STUFF, BACKGROUND], [1, 2])
    assert stuff.text == "a photo of sky and grass"
    assert background.text == "a dog outdoors"
    assert stuff.negative == "blurry"
    assert stuff.perturbation is None
    assert stuff.record() == {"prompt": "a photo of sky and grass", "negative_prompt": "blurry", "perturbation": None, "prompt_source": "template"}


def test_perturbation_swaps_a_related_class():
    builder = PromptBuilder({"prompt": "a photo of {classes}", "perturbation": 1.0})
    prompts = builder.build([STUFF] * 20, list(range(20)))
    for prompt in prompts:
        assert prompt.perturbation["from"] in ("sky", "grass")
        assert prompt.perturbation["to"] not in ("sky", "grass")
        assert prompt.perturbation["to"] in prompt.text
        assert prompt.perturbation["from"] not in prompt.text
    assert len({prompt.text for prompt in prompts}) > 3


def test_prompts_are_reproducible_from_seeds():
    builder = PromptBuilder({"perturbation": 0.5})
    first = [prompt.record() for prompt in builder.build([STUFF, BACKGROUND] * 5, list(range(10)))]
    second = [prompt.record() for prompt in PromptBuilder({"perturbation": 0.5}).build([STUFF, BACKGROUND] * 5, list(range(10)))]
    assert first == second
    assert sum(record["perturbation"] is not None for record in first) in range(1, 10)


def test_default_templates_and_negative_prompt():
    prompt = PromptBuilder({"perturbation": 0.0}).build([BACKGROUND], [3])[0]
    assert "dog" in prompt.text
    assert prompt.negative.startswith("blurry")
    assert PromptBuilder({"negative_prompt": ""}).build([STUFF], [3])[0].negative == ""


def test_mask_without_classes_uses_default_template():
    prompt = PromptBuilder({"perturbation": 1.0}).build([{"kind": "Stuff", "classes": []}], [0])[0]
    assert prompt.text == "a realistic photo"
    assert prompt.perturbation is None


@pytest.mark.parametrize(
    "params, message",
    [
        ({"perturbation": 1.5}, "perturbation must be a probability"),
        ({"prompt": "a photo of {thing}"}, "use only the placeholders"),
        ({"prompt": 3}, "prompt must be a template string"),
    ],
)
def test_invalid_prompt_parameters(params, message):
    with pytest.raises(MethodError, match=message):
        PromptBuilder(params)


def test_perturbation_of_a_caption():
    builder = PromptBuilder({"perturbation": 1.0})
    prompt = builder._perturb_caption("Blue sky over a wide field", ["sky", "grass"], seed=4)
    assert prompt.perturbation["from"] == "sky"
    assert prompt.text == f"Blue {prompt.perturbation['to']} over a wide field"
    assert builder._perturb_caption("a wide field", ["sky", "grass"], seed=4).perturbation is None


def test_missing_captioner_folder_fails_check(tmp_path):
    builder = PromptBuilder({"captioner": str(tmp_path / "absent")})
    with pytest.raises(MethodError, match="has no config.json"):
        builder.check()


@pytest.fixture
def tiny_captioner(tmp_path):
    """A randomly initialised BLIP captioner with a 20-word vocabulary, saved like a downloaded model."""
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "photo", "of", "sky", "grass", "snow", "sand", "the", "and", "green", "blue", "field", "with", "clouds", "describe"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=BertTokenizer(str(tmp_path / "vocab.txt")))
    text = dict(vocab_size=len(words), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64,
                bos_token_id=2, sep_token_id=3, pad_token_id=0, eos_token_id=3)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8)
    torch.manual_seed(0)
    folder = tmp_path / "captioner"
    BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision, projection_dim=32)).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_captioner_writes_prompts(tiny_captioner):
    builder = PromptBuilder({"captioner": str(tiny_captioner), "captioner_prompt": "a photo of", "captioner_max_tokens": 6, "perturbation": 0.0})
    builder.check()
    images = [np.full((8, 10, 3), 30, np.uint8), np.full((20, 20, 3), 220, np.uint8)]
    first = builder.build([STUFF, BACKGROUND], [0, 1], images)
    second = builder.build([STUFF, BACKGROUND], [0, 1], images)
    assert [prompt.source for prompt in first] == ["captioner", "captioner"]
    assert all(prompt.text for prompt in first)
    assert [prompt.text for prompt in first] == [prompt.text for prompt in second]
    assert set(" ".join(prompt.text for prompt in first).split()) <= {"a", "photo", "of", "sky", "grass", "snow", "sand", "the", "and", "green", "blue", "field", "with", "clouds", "describe"}
