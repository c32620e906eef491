"""Write outputs.safetensors and configs.json: the official BrushNet and PowerPaint code run on tiny models.

Not part of brgen and not run by the tests. It needs the environment described in
../brushnet-parameters/generate.py (`diffusers` = TencentARC/BrushNet's fork, `powerpaint` importable):

    PYTHONPATH=<BrushNet>/src:<PowerPaint> python generate.py

Three cases: BrushNet on an SD-1.5-like UNet, BrushNet on an SDXL-like UNet (size and pooled-text
conditioning), and PowerPaint's cross-attention BrushNet. Each UNet is tiny, its BrushNet comes from the
official `BrushNetModel.from_unet`, and every parameter is filled by `fill_parameters`, which brgen's test
repeats, so no weights are stored. The outputs are BrushNet's additions and the UNet's noise prediction
with those additions.
"""

import json
import zlib
from pathlib import Path

import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent

UNET_SD = dict(block_out_channels=[16, 32], layers_per_block=1, down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
               up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], cross_attention_dim=16, attention_head_dim=4,
               norm_num_groups=8, sample_size=8, in_channels=4, out_channels=4)
UNET_XL = dict(UNET_SD, addition_embed_type="text_time", addition_time_embed_dim=4, projection_class_embeddings_input_dim=4 * 6 + 16,
               transformer_layers_per_block=[1, 2], use_linear_projection=True, attention_head_dim=[2, 4])
# PowerPaint's from_unet assumes SD 1.5's four blocks.
UNET_PP = dict(block_out_channels=[8, 16, 16, 16], layers_per_block=1, cross_attention_dim=16, attention_head_dim=4,
               norm_num_groups=8, sample_size=8, in_channels=4, out_channels=4)

CASES = {
    "brushnet": ("diffusers.models.brushnet", "diffusers", UNET_SD),
    "brushnet_xl": ("diffusers.models.brushnet", "diffusers", UNET_XL),
    "powerpaint": ("powerpaint.models.BrushNet_CA", "powerpaint.models.unet_2d_condition", UNET_PP),
}


def fill_parameters(model: torch.nn.Module) -> None:
    """Fill every parameter with N(0, 0.05^2) noise seeded by the crc32 of its name."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)


def main() -> None:
    tensors, configs = {}, {}
    for case, (brushnet_module, unet_module, unet_config) in CASES.items():
        brushnet_class = __import__(brushnet_module, fromlist=["BrushNetModel"]).BrushNetModel
        unet_class = __import__(unet_module, fromlist=["UNet2DConditionModel"]).UNet2DConditionModel
        unet = unet_class(**unet_config).eval()
        # Without copying weights: from_unet would share conv_in.bias between the two models.
        brushnet = brushnet_class.from_unet(unet, load_weights_from_unet=False).eval()
        fill_parameters(unet)
        fill_parameters(brushnet)
        configs[case] = {"unet": dict(unet.config), "brushnet": dict(brushnet.config)}

        # Latents of 9x7 are not multiples of the UNet's total downsampling, so upsample sizes are passed on.
        generator = torch.Generator().manual_seed(7)
        sample = torch.randn(2, 4, 9, 7, generator=generator)
        condition = torch.randn(2, 5, 9, 7, generator=generator)
        context = torch.randn(2, 6, 16, generator=generator)
        added = None
        if case == "brushnet_xl":
            added = {"text_embeds": torch.randn(2, 16, generator=generator), "time_ids": torch.tensor([[72.0, 56.0, 0.0, 0.0, 72.0, 56.0]] * 2)}
            tensors[f"{case}.text_embeds"] = added["text_embeds"]
            tensors[f"{case}.time_ids"] = added["time_ids"]
        with torch.no_grad():
            down, mid, up = brushnet(sample, torch.tensor(500), encoder_hidden_states=context, brushnet_cond=condition,
                                     conditioning_scale=0.7, added_cond_kwargs=added, return_dict=False)
            noise = unet(sample, torch.tensor(500), encoder_hidden_states=context, added_cond_kwargs=added,
                         down_block_add_samples=list(down), mid_block_add_sample=mid, up_block_add_samples=list(up), return_dict=False)[0]
        tensors.update({f"{case}.sample": sample, f"{case}.condition": condition, f"{case}.context": context, f"{case}.mid": mid, f"{case}.noise": noise})
        tensors.update({f"{case}.down.{index}": tensor for index, tensor in enumerate(down)})
        tensors.update({f"{case}.up.{index}": tensor for index, tensor in enumerate(up)})

    save_file({key: value.contiguous() for key, value in tensors.items()}, HERE / "outputs.safetensors")
    (HERE / "configs.json").write_text(json.dumps(configs, indent=1, default=list) + "\n")


if __name__ == "__main__":
    main()
