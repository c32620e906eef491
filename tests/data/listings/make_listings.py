"""Write the parameter and buffer listings of the official MAT and LaMa generators from the authors' code.

This script is not part of brgen and the tests do not run it. It imports the authors' repositories, builds
their generators on the CPU with the released hyperparameters, and writes one TSV per state-dict layout:
name, kind (parameter or buffer), shape and dtype, in state-dict order.

    python tests/data/listings/make_listings.py --mat-repo ~/src/MAT --lama-repo ~/src/lama --out tests/data/listings

The authors' modules import timm, kornia and pytorch_lightning for helpers that create no parameters. The
script installs minimal stand-ins for those three in `sys.modules`, so none of them needs to be installed.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import torch


def install_stand_ins() -> None:
    """Register stand-ins for the imports that the authors' generator modules need but never call here."""
    timm = types.ModuleType("timm")
    timm_models = types.ModuleType("timm.models")
    timm_layers = types.ModuleType("timm.models.layers")
    timm_layers.DropPath = torch.nn.Identity
    timm_layers.to_2tuple = lambda value: tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    timm_layers.trunc_normal_ = lambda tensor, *args, **kwargs: tensor
    kornia = types.ModuleType("kornia")
    kornia_geometry = types.ModuleType("kornia.geometry")
    kornia_transform = types.ModuleType("kornia.geometry.transform")
    kornia_transform.rotate = None
    lightning = types.ModuleType("pytorch_lightning")
    lightning.seed_everything = lambda *args, **kwargs: None
    sys.modules.update(
        {
            "timm": timm,
            "timm.models": timm_models,
            "timm.models.layers": timm_layers,
            "kornia": kornia,
            "kornia.geometry": kornia_geometry,
            "kornia.geometry.transform": kornia_transform,
            "pytorch_lightning": lightning,
        }
    )


def write_listing(module: torch.nn.Module, path: Path, header: str) -> int:
    parameters = {name for name, _ in module.named_parameters()}
    lines = [f"# {line}" for line in header.strip().splitlines()]
    lines.append("name\tkind\tshape\tdtype")
    state = module.state_dict()
    for name, tensor in state.items():
        kind = "parameter" if name in parameters else "buffer"
        shape = "x".join(str(size) for size in tensor.shape) or "scalar"
        lines.append(f"{name}\t{kind}\t{shape}\t{str(tensor.dtype).removeprefix('torch.')}")
    path.write_text("\n".join(lines) + "\n")
    return len(state)


def mat_listings(repo: Path, out: Path) -> None:
    sys.path.insert(0, str(repo))
    from networks.mat import Generator

    hyperparameters = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=512, img_channels=3)
    released = Generator(**hyperparameters, synthesis_kwargs={"use_noise": False})
    count = write_listing(
        released,
        out / "mat_places_512_fulldata_g.tsv",
        "State dict of Places_512_FullData_G.pth (md5 8ca927835fa3f5e21d65ffcb165377ed): the authors' Generator\n"
        "(networks/mat.py) with z_dim 512, c_dim 0, w_dim 512, img_resolution 512, img_channels 3 and\n"
        "synthesis use_noise False. Written by tests/data/listings/make_listings.py.",
    )
    print(f"MAT, released layout: {count} entries")

    with_noise = Generator(**hyperparameters)
    count = write_listing(
        with_noise,
        out / "mat_authors_generator_with_noise.tsv",
        "State dict of the authors' Generator with its default synthesis use_noise True, the layout of the G_ema\n"
        "in the authors' training pickles. Same hyperparameters. Written by tests/data/listings/make_listings.py.",
    )
    print(f"MAT, authors' default layout: {count} entries")


def lama_listing(repo: Path, out: Path) -> None:
    sys.path.insert(0, str(repo))
    from saicinpainting.training.modules.ffc import FFCResNetGenerator

    generator = FFCResNetGenerator(
        input_nc=4,
        output_nc=3,
        ngf=64,
        n_downsampling=3,
        n_blocks=18,
        add_out_act="sigmoid",
        init_conv_kwargs=dict(ratio_gin=0, ratio_gout=0, enable_lfu=False),
        downsample_conv_kwargs=dict(ratio_gin=0, ratio_gout=0, enable_lfu=False),
        resnet_conv_kwargs=dict(ratio_gin=0.75, ratio_gout=0.75, enable_lfu=False),
    )
    count = write_listing(
        generator,
        out / "lama_big_lama_generator.tsv",
        "State dict of big-lama's generator: FFCResNetGenerator (saicinpainting/training/modules/ffc.py) with the\n"
        "`generator` section of configs/training/big-lama.yaml. In big-lama.pt these names carry the prefix\n"
        "`model.generator.`. Written by tests/data/listings/make_listings.py.",
    )
    print(f"LaMa: {count} entries")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mat-repo", type=Path, help="checkout of github.com/fenglinglwb/MAT")
    parser.add_argument("--lama-repo", type=Path, help="checkout of github.com/advimman/lama")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    install_stand_ins()
    if args.mat_repo:
        mat_listings(args.mat_repo, args.out)
    if args.lama_repo:
        lama_listing(args.lama_repo, args.out)


if __name__ == "__main__":
    main()
