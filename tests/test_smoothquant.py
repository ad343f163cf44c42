"""smoothquant: the float function is unchanged and activation channel maxima flatten."""

from __future__ import annotations

from pathlib import Path

import attrs
import torch
from torch import nn

from acekit.ir.graph import Graph
from tests.algorithm_support import Keep, assert_deploys_like_simulation, compile_with
from tests.quant_support import trained_like

SHAPE = (4, 6, 32)
#: Enough calibration rows for ranges that hold on held-out data (the error comparisons).
POST_SHAPE = (16, 6, 32)


class PreNormMlp(nn.Module):
    """A pre-norm MLP block whose LayerNorm output has three outlier channels."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, 4 * dim)
        self.down = nn.Linear(4 * dim, dim)
        self.head = nn.Linear(dim, 5)
        with torch.no_grad():
            self.norm.weight[:3] *= 40.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.down(torch.relu(self.up(self.norm(x))))
        return self.head(x[:, 0])


def _norm_output_max(graph: Graph, data: list[torch.Tensor]) -> torch.Tensor:
    from acekit.runtime.codegen import to_module

    (norm,) = [n for n in graph.nodes if n.op == "layer_norm"]
    tap = Keep()
    module = to_module(graph, taps={norm.outputs[0].name: tap})
    with torch.no_grad():
        for batch in data:
            module(batch)
    return torch.cat([t.reshape(-1, t.shape[-1]) for t in tap.seen]).abs().amax(0)


def test_smoothquant_keeps_fp32_and_flattens_channel_maxima(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = trained_like(PreNormMlp(), POST_SHAPE)
    generator = torch.Generator().manual_seed(2)
    data = [torch.randn(*POST_SHAPE, generator=generator) for _ in range(4)]
    plain = compile_with(model, data, "cleanup", tmp_path / "a")
    # Only the fold into the LayerNorm (the inserted multiplies have their own test).
    smoothed = compile_with(model, data, "cleanup,smoothquant{insert=false}", tmp_path / "b")
    # Held-out inputs from their own generator: compile leaves the global one untouched.
    x = torch.randn(*POST_SHAPE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(smoothed(x), model(x), rtol=1e-4, atol=1e-5)
    before, after = _norm_output_max(plain.graph, data), _norm_output_max(smoothed.graph, data)
    assert before.max() / before.median() > 10
    assert after.max() / after.median() < (before.max() / before.median()) / 3
    assert (
        "SmoothQuant: 1 of 1 LayerNorms smoothed"
        in next((tmp_path / "b").rglob("*.log")).read_text()
    )
    nearest = compile_with(model, data, "cleanup,ptq", tmp_path / "c")
    quantized = compile_with(model, data, "cleanup,smoothquant{insert=false},ptq", tmp_path / "d")
    with torch.no_grad():
        assert (quantized(x) - model(x)).norm() < (nearest(x) - model(x)).norm()
    assert_deploys_like_simulation(quantized, x, tmp_path)


def test_smoothquant_without_outliers_leaves_the_norm(tmp_path: Path) -> None:
    flat = PreNormMlp()
    with torch.no_grad():
        flat.norm.weight.fill_(1.0)
    model = trained_like(flat, SHAPE)
    data = [torch.randn(*SHAPE)]
    compile_with(model, data, "cleanup,smoothquant", tmp_path)
    log = next(tmp_path.rglob("*.log")).read_text()
    assert "left as is: channel max spread" in log
    assert "SmoothQuant: 0 of 1 LayerNorms smoothed" in log


class PostNormMlp(nn.Module):
    """A post-norm (BERT-style) block: the LayerNorm output feeds the MLP and the residual."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, 4 * dim)
        self.down = nn.Linear(4 * dim, dim)
        with torch.no_grad():
            self.norm.weight[:3] *= 40.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        return h + self.down(torch.nn.functional.gelu(self.up(h)))


def test_smoothquant_inserts_a_multiply_where_the_norm_cannot_take_it(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = trained_like(PostNormMlp(), POST_SHAPE)
    generator = torch.Generator().manual_seed(2)
    data = [torch.randn(*POST_SHAPE, generator=generator) for _ in range(4)]
    smoothed = compile_with(model, data, "cleanup,smoothquant{alpha=0.5}", tmp_path / "a")
    (norm,) = [n for n in smoothed.graph.nodes if n.op == "layer_norm"]
    (up,) = [n for n in smoothed.graph.nodes if n.name == "up"]
    multiply = up.inputs[0].producer
    assert multiply is not None and multiply.op == "mul"
    assert multiply.inputs[0] is norm.outputs[0]
    # The residual add still reads the LayerNorm output itself.
    assert {u.op for u in norm.outputs[0].users} == {"mul", "add"}
    x = torch.randn(*POST_SHAPE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(smoothed(x), model(x), rtol=1e-4, atol=1e-5)
    log = next((tmp_path / "a").rglob("*.log")).read_text()
    assert "SmoothQuant: 0 of 0 LayerNorms smoothed" in log
    assert "a multiply inserted" in log
    nearest = compile_with(model, data, "cleanup,ptq", tmp_path / "b")
    quantized = compile_with(model, data, "cleanup,smoothquant,ptq", tmp_path / "c")
    with torch.no_grad():
        assert (quantized(x) - model(x)).norm() < (nearest(x) - model(x)).norm()
    assert_deploys_like_simulation(quantized, x, tmp_path)


def test_smoothquant_without_insert_leaves_a_post_norm_block(tmp_path: Path) -> None:
    model = trained_like(PostNormMlp(), POST_SHAPE)
    data = [torch.randn(*POST_SHAPE, generator=torch.Generator().manual_seed(3))]
    compile_with(model, data, "cleanup,smoothquant{insert=false}", tmp_path)
    log = next(tmp_path.rglob("*.log")).read_text()
    assert "no LayerNorm with its own weight and bias feeds only linear layers" in log


def test_alpha_ranking_rounds_weights_on_the_deployed_block_grid() -> None:
    from acekit.ir.quant import Granularity, QuantSpec
    from acekit.quant import qmath
    from acekit_algorithms.smoothquant import _weight_fake_quant

    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(8, 64, generator=generator)
    weight[:, 3] *= 20.0  # a smoothed outlier input column
    for symmetric in (True, False):
        spec = QuantSpec(
            bits=4,
            signed=True,
            symmetric=symmetric,
            granularity=Granularity.PER_CHANNEL,
            axis=0,
            block_size=16,
        )
        low, high = qmath.block_range(weight, 0, 16)
        scale, zero = qmath.qparams_from_range(low, high, bits=4, signed=True, symmetric=symmetric)
        deployed = qmath.fake_quantize_exact(
            weight, scale, zero.float(), spec.qmin, spec.qmax, 0, 16
        )
        ranked = _weight_fake_quant(weight, spec)
        torch.testing.assert_close(ranked, deployed, rtol=0, atol=1e-5)
        per_channel = _weight_fake_quant(weight, attrs.evolve(spec, block_size=None))
        # Only the outlier column's block pays for it: the other blocks round finer.
        assert (ranked - weight).pow(2).sum() < 0.5 * (per_channel - weight).pow(2).sum()
