"""Free dims end to end: calibrate at another batch size, export, run ORT at other shapes.

Each model is compiled with a batch-1 example and calibration batches of 2 (and, for
text, another sequence length), exported, and run in ONNX Runtime at batch 1 and 3
(sequence lengths 8 and 13), compared with the simulation ``qm(x)`` and with FP32.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import acekit
from acekit.dims import DynamicShapesError, infer_free_dims
from acekit.quant.data import CalibrationDataError
from acekit.runtime import has_kernel
from acekit.runtime.symbolic import generalize_types
from acekit.settings import GlobalQuantizationSettings, TrainingSettings
from tests.quant_support import ort_session, run_ort, sqnr


class FlattenNet(nn.Module):
    """Conv, then ``view(x.size(0), -1)`` into a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x))
        return self.fc(x.view(x.size(0), -1))


class ComputedReshape(nn.Module):
    """Reshapes with sizes computed from ``x.shape`` (floordiv and products of sizes)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(4 * 2 * 64, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x))
        b, c, h, w = x.shape
        x = x.reshape(b, c // 2, 2, h * w).transpose(1, 2)
        return self.fc(x.reshape(b, -1))


class TimmStyleViT(nn.Module):
    """A patch embedding, class token and attention written the way timm writes them:
    sizes read from ``x.shape`` in ``forward`` (Reshape, Concat and Add in ONNX)."""

    def __init__(self, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.proj = nn.Conv2d(3, dim, 4, stride=4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, 5, dim) * 0.02)
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        B, N, C = x.shape
        qkv = self.qkv(self.norm(x)).reshape(B, N, 3, self.heads, C // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q @ k.transpose(-2, -1) * (C // self.heads) ** -0.5).softmax(dim=-1)
        x = x + self.out((attn @ v).transpose(1, 2).reshape(B, N, C))
        return self.head(x[:, 0])


class EncoderLayer(nn.Module):
    """``nn.TransformerEncoderLayer`` (batch first), captured through torch.export."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def _compile(model: nn.Module, example: tuple[Any, ...], loader: Any, tmp: Path, **kw: Any) -> Any:
    return acekit.compile(
        model.eval(),
        example_inputs=example,
        calibration_inputs=loader,
        logs_dir=str(tmp / "logs"),
        **kw,
    )


def _check_ort(
    qm: Any, model: nn.Module, tmp: Path, inputs: Sequence[tuple[torch.Tensor, ...]]
) -> None:
    """ORT runs the export at every shape of ``inputs`` and matches ``qm`` and FP32."""
    session = ort_session(qm.export(tmp / "model.onnx"))
    for x in inputs:
        with torch.no_grad():
            simulated, reference = qm(*x), model(*x)
        deployed = run_ort(session, *x)
        assert deployed.shape == reference.shape
        assert sqnr(simulated, deployed) > 25, [t.shape for t in x]
        assert sqnr(reference, deployed) > 15, [t.shape for t in x]


def _images(batch: int, size: int = 16) -> DataLoader[Any]:
    data = TensorDataset(torch.randn(6, 3, size, size), torch.zeros(6))
    return DataLoader(data, batch_size=batch)


@pytest.mark.parametrize("model_class", [FlattenNet, ComputedReshape])
def test_computed_sizes_follow_the_batch(model_class: type[nn.Module], tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = model_class().eval()
    size = 8
    qm = _compile(model, (torch.randn(1, 3, size, size),), _images(2, size), tmp_path)
    assert qm.graph.inputs[0].type.shape == ("batch", 3, size, size)
    assert qm.graph.outputs[0].type.shape == ("batch", 5)
    # The batch size is computed in the graph, not folded into the reshape.
    assert any(n.op == "shape" for n in qm.graph.nodes)
    _check_ort(qm, model, tmp_path, [(torch.randn(b, 3, size, size),) for b in (1, 3)])


def test_timm_style_shapes_in_forward(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TimmStyleViT().eval()
    qm = _compile(model, (torch.randn(1, 3, 8, 8),), _images(2, 8), tmp_path)
    _check_ort(qm, model, tmp_path, [(torch.randn(b, 3, 8, 8),) for b in (1, 3)])


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.trace is deprecated
@pytest.mark.parametrize("model_class", [FlattenNet, TimmStyleViT])
def test_torchscript_models_keep_the_batch_free(
    model_class: type[nn.Module], tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = model_class().eval()
    example = torch.randn(1, 3, 8, 8)
    traced = torch.jit.trace(model, example)
    qm = _compile(traced, (example,), _images(2, 8), tmp_path)
    assert qm.graph.inputs[0].type.shape == ("batch", 3, 8, 8)
    _check_ort(qm, model, tmp_path, [(torch.randn(b, 3, 8, 8),) for b in (1, 3)])


def test_qat_trains_at_other_batch_sizes_and_the_checkpoint_keeps_them(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TimmStyleViT().eval()
    settings = acekit.Settings(
        training=TrainingSettings(stats_steps=2),
        quantization=GlobalQuantizationSettings(quantization_algorithm="qat"),
    )
    qm = _compile(model, (torch.randn(1, 3, 8, 8),), _images(2, 8), tmp_path, settings=settings)
    qm.train()
    optimizer = torch.optim.SGD(qm.parameters(), lr=1e-3)
    for batch in (3, 5):
        x = torch.randn(batch, 3, 8, 8)
        loss = F.mse_loss(qm(x), model(x).detach())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    qm.eval()
    loaded = acekit.load(qm.save(tmp_path / "qat.acekit"))
    assert loaded.graph.inputs[0].type.shape == ("batch", 3, 8, 8)
    _check_ort(loaded, model, tmp_path, [(torch.randn(b, 3, 8, 8),) for b in (1, 3)])


def test_transformer_encoder_layer_batch_and_sequence(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = EncoderLayer().eval()
    loader = DataLoader(TensorDataset(torch.randn(4, 11, 16)), batch_size=2)
    qm = _compile(
        model,
        (torch.randn(1, 8, 16),),
        loader,
        tmp_path,
        dynamic_shapes={"x": {0: "batch", 1: "seq"}},
    )
    assert qm.graph.inputs[0].type.shape == ("batch", "seq", 16)
    log = (qm.report.log_path).read_text()
    assert "Free dims: input 'x' dim 0 (user), input 'x' dim 1 (user)" in log
    shapes = [(torch.randn(b, n, 16),) for b in (1, 3) for n in (8, 13)]
    _check_ort(qm, model, tmp_path, shapes)


def test_sequence_dims_of_token_inputs_are_free() -> None:
    ids = torch.zeros(1, 8, dtype=torch.long)
    free = infer_free_dims((ids, ids, torch.zeros(1, 4)), ("input_ids", "mask", "extra"))
    assert [(d.name, d.dim, d.symbol) for d in free.dims] == [
        ("input_ids", 0, "batch"),
        ("input_ids", 1, "seq"),
        ("mask", 0, "batch"),
        ("mask", 1, "seq"),
        ("extra", 0, "batch"),
    ]
    assert free.describe().startswith("input 'input_ids' dim 0 (batch)")


def test_dims_differing_in_calibration_are_free() -> None:
    example = torch.zeros(1, 3, 8, 8)
    free = infer_free_dims((example,), ("x",), first_batch=(torch.zeros(2, 3, 8, 12),))
    assert [(d.dim, d.reason, d.other) for d in free.dims] == [
        (0, "batch", 2),
        (3, "calibration", 12),
    ]


def test_dynamic_shapes_naming_an_unknown_input_is_refused() -> None:
    with pytest.raises(DynamicShapesError, match="'y'"):
        infer_free_dims((torch.zeros(1, 3),), ("x",), dynamic_shapes={"y": {0: "batch"}})


def test_a_dim_kept_static_refuses_other_sizes_before_parsing(tmp_path: Path) -> None:
    with pytest.raises(CalibrationDataError, match="only its free dims may differ"):
        _compile(
            FlattenNet(),
            (torch.randn(1, 3, 8, 8),),
            _images(2, 8),
            tmp_path,
            dynamic_shapes={"x": {}},
        )


def test_a_dim_the_model_fixes_is_reported_where(tmp_path: Path) -> None:
    class Fixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3 * 8 * 8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.reshape(1, -1))

    with pytest.raises(Exception, match="fixed by the model at node") as raised:
        _compile(Fixed(), (torch.randn(1, 3, 8, 8),), _images(2, 8), tmp_path)
    assert isinstance(raised.value.__cause__, CalibrationDataError)


def test_tiny_bert_batch_and_sequence(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    if not has_kernel("arange"):
        pytest.skip("BERT's position ids at a free sequence length need the arange op")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
    )

    class Bert(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = transformers.BertModel(config, add_pooling_layer=False)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    model = Bert().eval()

    def batch(b: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        mask = torch.ones(b, n, dtype=torch.long)
        mask[:, n - 2 :] = 0
        return torch.randint(0, 64, (b, n)), mask

    qm = _compile(model, batch(1, 8), [batch(2, 11) for _ in range(2)], tmp_path)
    assert qm.graph.inputs[0].type.shape == ("batch", "seq")
    shapes = [batch(b, n) for b in (1, 3) for n in (8, 13)]
    _check_ort(qm, model, tmp_path, shapes)


@pytest.mark.slow
def test_timm_levit_reads_shapes_in_forward(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    # LeViT's attention reads ``B, N, C = x.shape`` in every block.
    model = timm.create_model("levit_128s", pretrained=False, num_classes=10, img_size=64).eval()
    qm = _compile(model, (torch.randn(1, 3, 64, 64),), _images(2, 64), tmp_path)
    _check_ort(qm, model, tmp_path, [(torch.randn(b, 3, 64, 64),) for b in (1, 3)])


def test_sizes_that_move_with_free_dims_get_symbols() -> None:
    class Mix(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.cat([x, x], 0), x.flatten(0, 1)

    x = torch.zeros(2, 5, 3, dtype=torch.long)
    free = infer_free_dims((x,), ("x",), dynamic_shapes={"x": {0: "batch", 1: "seq"}})
    graph = acekit.parse(Mix(), (x,))
    assert generalize_types(graph, (x,), free) == []
    doubled, flat = graph.outputs
    assert doubled.type.shape == ("2*batch", "seq", 3)
    assert flat.type.shape == ("batch*seq", 3)
    assert graph.input_nodes[0].attrs["example_shape"] == (2, 5, 3)
