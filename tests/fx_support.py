"""Helpers shared by the FX parser, runtime and zoo tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import torch

import acekit_fx
from acekit.plugin import get_plugin_manager


@pytest.fixture
def fx_registered() -> Iterator[None]:
    """Make sure the ``fx`` parser is registered (in-process when its entry point is not)."""
    manager = get_plugin_manager()
    added = "fx" not in manager.registry.parsers
    if added:
        manager.register_plugin(acekit_fx, "fx")
    yield
    if added:
        manager.unregister_plugin("fx")


@pytest.fixture
def parse_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Capture acekit's INFO events (the parser's per-node lines)."""
    caplog.set_level(logging.INFO, logger="acekit")
    return caplog


def max_diff(expected: Any, actual: Any) -> float:
    """The largest absolute difference between two nested structures of tensors."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor)
        assert expected.shape == actual.shape, (expected.shape, actual.shape)
        difference = (expected.detach().float() - actual.detach().float()).abs()
        return float(difference.max()) if expected.numel() else 0.0
    if isinstance(expected, dict) or hasattr(expected, "keys"):
        assert set(expected.keys()) == set(actual.keys())
        return max((max_diff(expected[k], actual[k]) for k in expected), default=0.0)
    if isinstance(expected, tuple | list):
        assert len(expected) == len(actual)
        return max((max_diff(e, a) for e, a in zip(expected, actual, strict=True)), default=0.0)
    assert expected == actual
    return 0.0


def max_abs(value: Any) -> float:
    """The largest absolute value in a nested structure of tensors."""
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().abs().max()) if value.numel() else 0.0
    if isinstance(value, dict) or hasattr(value, "keys"):
        return max((max_abs(value[k]) for k in value), default=0.0)
    if isinstance(value, tuple | list):
        return max((max_abs(v) for v in value), default=0.0)
    return 0.0


def assert_matches(expected: Any, actual: Any) -> None:
    """The zoo's tolerance: max abs diff <= 1e-4 * max(1, output abs max)."""
    diff = max_diff(expected, actual)
    scale = max(1.0, max_abs(expected))
    assert diff <= 1e-4 * scale, f"max abs diff {diff:.3e} > {1e-4 * scale:.3e}"


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The captured log messages, in order."""
    return [record.getMessage() for record in caplog.records]
