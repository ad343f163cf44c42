"""Weight ranges by quantization error: never worse than min/max, used below 8 bits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from acekit.ir.quant import Granularity, QuantSpec
from acekit_ptq.weight_clipping import clipped_qparams
from tests.algorithm_support import compile_with


def _spec(bits: int, axis: int | None = 0) -> QuantSpec:
    return QuantSpec(
        bits=bits,
        signed=True,
        symmetric=True,
        granularity=Granularity.PER_TENSOR if axis is None else Granularity.PER_CHANNEL,
        axis=axis,
    )


def _error(weight: torch.Tensor, scale: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    s = scale.reshape(-1, 1)
    q = torch.clamp(torch.round(weight / s), spec.qmin, spec.qmax)
    return (q * s - weight).pow(2).sum(1)


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_clipping_is_never_worse_than_min_max_per_channel(bits: int) -> None:
    generator = torch.Generator().manual_seed(0)
    # Heavy tails, as trained weights have: min/max wastes levels on a few large ones.
    weight = torch.randn(16, 256, generator=generator) ** 3
    spec = _spec(bits)
    scale, zero = clipped_qparams(weight, spec)
    minmax = weight.abs().amax(1) / (2 ** (bits - 1) - 1)
    assert torch.all(zero == 0)
    clipped, full = _error(weight, scale, spec), _error(weight, minmax, spec)
    assert torch.all(clipped <= full + 1e-6)
    if bits <= 4:
        assert float(clipped.sum()) < 0.9 * float(full.sum())
        assert bool((scale < minmax * 0.999).any())


def test_per_tensor_clipping_gives_one_scale() -> None:
    scale, zero = clipped_qparams(torch.randn(8, 8), _spec(4, axis=None))
    assert scale.shape == (1,) and zero.shape == (1,)


def test_calibration_clips_four_bit_weights_and_keeps_eight_bit_min_max(tmp_path: Path) -> None:
    torch.manual_seed(0)
    first_layer = nn.Linear(32, 32)
    with torch.no_grad():
        first_layer.weight.copy_(first_layer.weight**3 * 100)
    model = nn.Sequential(first_layer, nn.ReLU(), nn.Linear(32, 8)).eval()
    data = [torch.randn(4, 32) for _ in range(2)]
    amax = first_layer.weight.detach().abs().amax(1)
    for bits, expect_clipped in ((8, False), (4, True)):
        qm = compile_with(model, data, "cleanup,ptq", tmp_path / str(bits), weights_bits=bits)
        (first,) = [n for n in qm.graph.nodes if n.op == "linear"][:1]
        spec = first.inputs[1].quant
        assert spec is not None and spec.scale is not None
        scale = torch.tensor(spec.scale)
        minmax = amax / (2 ** (bits - 1) - 1)
        if expect_clipped:
            assert bool((scale < minmax * 0.999).any())
        else:
            torch.testing.assert_close(scale, minmax, rtol=1e-5, atol=1e-8)
