"""Write the parameter listings in this folder from the official BrushNet and PowerPaint code.

Not part of brgen and not run by the tests. It needs an environment (torch, transformers 4.28,
huggingface_hub < 0.26) in which `diffusers` is TencentARC/BrushNet's fork and `powerpaint` is
open-mmlab/PowerPaint's package:

    PYTHONPATH=<BrushNet>/src:<PowerPaint> python generate.py

PowerPaint's utils import `print_log` from mmengine; an empty stand-in module is enough here.
Each listing maps a state-dict key to its shape, for a full-size model built on the meta device from the
config files next to this script.
"""

import json
import sys
from pathlib import Path

import torch
from diffusers.models.brushnet import BrushNetModel as OfficialBrushNet
from powerpaint.models.BrushNet_CA import BrushNetModel as OfficialPowerPaintBrushNet
from powerpaint.models.unet_2d_condition import UNet2DConditionModel as PowerPaintUNet
from powerpaint.utils.utils import EmbeddingLayerWithFixes
from transformers import CLIPTextConfig, CLIPTextModel

HERE = Path(__file__).resolve().parent

# The UNet config of Stable Diffusion 1.5 (runwayml/stable-diffusion-v1-5, unet/config.json), which
# PowerPaint's app turns into its BrushNet with `BrushNetModel.from_unet`.
SD15_UNET = dict(
    act_fn="silu", attention_head_dim=8, block_out_channels=[320, 640, 1280, 1280], center_input_sample=False,
    cross_attention_dim=768, down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"], downsample_padding=1,
    flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2, mid_block_scale_factor=1, norm_eps=1e-05,
    norm_num_groups=32, out_channels=4, sample_size=64, up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
)


def listing(model: torch.nn.Module) -> dict:
    return {name: list(tensor.shape) for name, tensor in model.state_dict().items()}


def config(name: str) -> dict:
    return json.loads((HERE / f"config_{name}.json").read_text())


def write(name: str, shapes: dict) -> None:
    lines = ",\n".join(f"{json.dumps(key)}: {json.dumps(value)}" for key, value in shapes.items())
    (HERE / f"{name}.json").write_text("{\n" + lines + "\n}\n")


def main() -> None:
    with torch.device("meta"):
        write("brushnet_sd15", listing(OfficialBrushNet(**config("brushnet_sd15"))))
        write("brushnet_sdxl", listing(OfficialBrushNet(**config("brushnet_sdxl"))))
        powerpaint = OfficialPowerPaintBrushNet(**config("powerpaint_brushnet"))
        derived = OfficialPowerPaintBrushNet.from_unet(PowerPaintUNet(**SD15_UNET), load_weights_from_unet=False)
    if listing(derived) != listing(powerpaint):
        sys.exit("config_powerpaint_brushnet.json differs from what from_unet derives from SD 1.5")
    write("powerpaint_brushnet", listing(powerpaint))

    # PowerPaint v2's text encoder: SD 1.5's CLIP text model whose token embedding is wrapped by
    # EmbeddingLayerWithFixes with three learned task tokens of 10 vectors each, as app.py builds it.
    text_config = CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                 num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)
    encoder = CLIPTextModel(text_config)
    wrapper = EmbeddingLayerWithFixes(encoder.text_model.embeddings.token_embedding)
    encoder.text_model.embeddings.token_embedding = wrapper
    for index, token in enumerate(["P_ctxt", "P_shape", "P_obj"]):
        start = 49408 + 10 * index
        wrapper.add_embeddings({"name": token, "embedding": torch.zeros(10, 768), "start": start, "end": start + 10, "trainable": True})
    write("powerpaint_text_encoder", listing(encoder))


if __name__ == "__main__":
    main()
