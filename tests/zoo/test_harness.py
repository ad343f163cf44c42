"""The zoo harness's own measurements (fast; the sweep itself is test_zoo.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.zoo.harness import SENSITIVITY_PROBE_DB, fp32_sensitivity


def test_sensitivity_of_a_linear_model_is_the_probe_noise() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 8)
    assert fp32_sensitivity(nn.Identity(), (x,)) == pytest.approx(SENSITIVITY_PROBE_DB)


def test_sensitivity_shows_a_model_that_amplifies_noise() -> None:
    # Deep random tanh layers with large gains: the chaotic regime, where a small input
    # perturbation grows layer by layer (as with some zoo models' random weights).
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(12):
        linear = nn.Linear(64, 64)
        nn.init.normal_(linear.weight, std=4.0 / 8)
        layers += [linear, nn.Tanh()]
    model = nn.Sequential(*layers).eval()
    assert fp32_sensitivity(model, (torch.randn(4, 64),)) < SENSITIVITY_PROBE_DB - 10
