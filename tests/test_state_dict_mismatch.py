"""The short description of a state dict that does not fit a model, which every weight loader puts in its error."""

import torch

from brgen_build.model_checks import describe_state_dict_mismatch


def test_matching_state_dict_has_no_description():
    model = torch.nn.Linear(3, 2)
    assert describe_state_dict_mismatch(model.state_dict(), model.state_dict()) is None


def test_counts_and_first_names_per_kind():
    with torch.device("meta"):
        expected = torch.nn.Sequential(*[torch.nn.Linear(2, 2) for _ in range(4)]).state_dict()
    actual = {"0.weight": torch.zeros(3, 2), "0.bias": torch.zeros(2), "extra": torch.zeros(1)}
    description = describe_state_dict_mismatch(expected, actual)
    assert description.startswith("6 missing keys (first 5: 1.weight; 1.bias; 2.weight; 2.bias; 3.weight), ")
    assert "1 unexpected key (extra)" in description
    assert description.endswith("1 tensor of another shape (0.weight 3x2 in the file, 2x2 expected)")
