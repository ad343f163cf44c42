"""The cleanup preset on torchvision's ViT: the reference log's lines, same outputs."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

import acekit
from acekit.api import ParseError
from acekit.passes import Pipeline, PipelineResult

torchvision = pytest.importorskip("torchvision")
from torchvision.models.vision_transformer import VisionTransformer  # noqa: E402


def cleanup(model: nn.Module, x: torch.Tensor, *, free_batch: bool = False) -> PipelineResult:
    """Parse ``model`` and run the ``cleanup`` preset, verifying after each pass.

    The graph is static (every dim at the example's size, as in the reference log)
    unless ``free_batch``.
    """
    try:
        graph = acekit.parse(model, (x,), dynamic_shapes=None if free_batch else ({},))
    except ParseError as error:
        pytest.skip(f"no parser available: {error}")
    return Pipeline.from_spec("cleanup").run(graph, verify=True)


def stats_of(result: PipelineResult, name: str) -> dict[str, int | float]:
    """The stats of the first run of pass ``name``."""
    return next(dict(r.stats) for pass_name, r in result.results if pass_name == name)


def cleanup_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The human lines the cleanup plugin logged, in order."""
    return [r.getMessage() for r in caplog.records if r.name.startswith("acekit.acekit_cleanup")]


def check_outputs(result: PipelineResult, model: nn.Module, x: torch.Tensor) -> None:
    """The cleaned graph computes what the model does (atol 1e-5 of the output scale)."""
    with torch.no_grad():
        expected = model(x)
        actual = result.graph.to_module().eval()(x)
    scale = max(1.0, float(expected.abs().max()))
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * scale)


def small_vit() -> VisionTransformer:
    """A two-block ViT on 32x32 images."""
    torch.manual_seed(0)
    return VisionTransformer(
        image_size=32,
        patch_size=16,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
        num_classes=10,
    ).eval()


def test_small_vit_cleanup(caplog: pytest.LogCaptureFixture) -> None:
    model = small_vit()
    x = torch.randn(2, 3, 32, 32)
    with caplog.at_level(logging.INFO, logger="acekit"):
        result = cleanup(model, x)
    # One dropout after the position embedding, three per encoder block.
    assert stats_of(result, "remove-dropout")["removed"] == 1 + 3 * 2
    assert "Removed 7 Dropout layers" in cleanup_lines(caplog)
    ops = {node.op for node in result.graph.nodes}
    assert not ops & {"dropout", "assert", "shape", "gather", "eq", "dim", "pack"}
    check_outputs(result, model, x)


def test_vit_b_16_cleanup_log_matches_the_reference(caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(weights=None).eval()
    x = torch.randn(1, 3, 224, 224)
    with caplog.at_level(logging.INFO, logger="acekit"):
        result = cleanup(model, x)
    unnecessary = stats_of(result, "fold-constants")["removed"]
    assert unnecessary > 0
    assert stats_of(result, "remove-unused")["removed"] == 0
    assert stats_of(result, "remove-dropout")["removed"] == 37
    # With batch 1 the class token's expand to (1, -1, -1) changes nothing.
    assert stats_of(result, "remove-useless")["removed"] == 1
    # The reference log's three lines, in its order.
    assert cleanup_lines(caplog) == [
        f"Removed {unnecessary} unnecessary nodes",
        "Removed 37 Dropout layers",
        "Removed 1 unnecessary nodes",
    ]
    check_outputs(result, model, x)


def test_small_vit_cleanup_with_a_free_batch_keeps_only_the_batch_arithmetic() -> None:
    model = small_vit()
    x = torch.randn(2, 3, 32, 32)
    result = cleanup(model, x, free_batch=True)
    ops = {node.op for node in result.graph.nodes}
    # The rank checks fold (a rank is known with symbolic sizes); what reads the batch stays.
    assert not ops & {"dropout", "assert", "eq", "dim"}
    queried = [node for node in result.graph.nodes if node.op == "gather"]
    assert queried and all(node.attrs["index"] == 0 for node in queried)
    check_outputs(result, model, torch.randn(3, 3, 32, 32))
