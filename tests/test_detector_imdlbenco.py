"""NFA-ViT in IMDLBenCo's model registry: with a stand-in registry, and with IMDLBenCo itself when installed."""

import importlib.util

import pytest
import torch

from detector.imdlbenco import FALLBACK_NAME, NAME, IMDLBenCoNFAViT, register
from detector_helpers import save_tiny_mit_folders, save_tiny_noiseprint


class StandInRegistry:
    """The part of IMDLBenCo's Registry that registration uses: `has` and `register_module`."""

    def __init__(self, names=()):
        self.modules = {name: object for name in names}

    def has(self, name):
        return name in self.modules

    def register_module(self, name=None, force=False, module=None):
        assert not force
        self.modules[name] = module
        return module


def test_registers_under_published_name():
    registry = StandInRegistry()
    assert register(registry) == NAME
    assert registry.modules[NAME] is IMDLBenCoNFAViT


def test_taken_name_falls_back():
    registry = StandInRegistry([NAME])
    assert register(registry) == FALLBACK_NAME
    assert registry.modules[FALLBACK_NAME] is IMDLBenCoNFAViT


def test_output_follows_imdlbenco_interface(tmp_path):
    noise, image = save_tiny_mit_folders(tmp_path)
    model = IMDLBenCoNFAViT(
        np_pretrain_weights=str(save_tiny_noiseprint(tmp_path / "noiseprint++.th")),
        seg_b0_pretrain_weights=str(noise), seg_b2_pretrain_weights=str(image), image_size=64,
    )
    mask = torch.zeros(2, 1, 64, 64)
    mask[0, :, 10:30, 10:30] = 1
    output = model(torch.randn(2, 3, 64, 64), mask, torch.tensor([1, 0]))
    assert output["pred_mask"].shape == (2, 1, 64, 64)
    assert output["pred_label"].shape == (2,)
    assert torch.isfinite(output["backward_loss"])
    assert sorted(output["visual_loss"]) == ["predict_label_loss", "predict_loss", "predict_mask_loss"]


@pytest.mark.skipif(
    importlib.util.find_spec("IMDLBenCo") is None,
    reason="IMDLBenCo is not installed: it pulls torchvision, which does not import beside the CPU torch of the test environment",
)
def test_registered_in_imdlbenco():
    from IMDLBenCo.registry import MODELS

    import detector.imdlbenco

    assert MODELS.get(detector.imdlbenco.REGISTERED_NAME) is IMDLBenCoNFAViT
