"""PTQ against ONNX Runtime's own ``quantize_static``: same models, same data, one script.

For resnet18, resnet50, mobilenet_v2, vit_b_16 (torchvision, random weights, BatchNorm
statistics re-estimated on seeded random inputs, ViT head given a small random init) and
a BERT-style encoder (``transformers.BertModel`` from a config, random weights), this
quantizes the model with acekit (``acekit.compile`` + ``export``) and with ORT
(``quant_pre_process`` + ``quantize_static``: per-channel s8 weights, u8 activations,
QDQ), both on the same 32 calibration samples, then measures in ONNX Runtime (CPU
provider, 2 intra-op threads, sequential, ORT's default thread spinning):

* FP32 (``torch.onnx.export``) and both INT8 models, timed in alternating blocks of 10
  runs with a 50 ms pause between blocks (A B C A B C ...; the first run of each block
  not counted), median of at least
  ``--runs`` runs, and the speedups;
* the float Conv/Gemm/MatMul left in ORT's optimised model (and what else is there:
  Q/DQ, Reshape, Transpose);
* fidelity against the torch FP32 model on held-out inputs (output SQNR; for the
  encoder the cosine similarity of ``last_hidden_state`` per valid token);
* the quantization step's wall time and peak RSS.

It writes the table and the goals of ``../shared/BENCHMARKS.md`` (met or not) into
docs/benchmarks.md.

Run: ``.venv/bin/python -m benchmarks.ptq [--models resnet18,bert] [--runs 30]``
(10-20 minutes for all models on 2 cores).
"""

from __future__ import annotations

import argparse
import collections
import gc
import math
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

import acekit
from acekit.job import time_alternating
from acekit.settings import TrainingSettings
from benchmarks.common import machine, peak_rss_mib, reset_peak_rss, today, versions, write_section

CALIBRATION_SAMPLES = 32
EVAL_SAMPLES = 8
BN_SAMPLES = 32
SEQUENCE_LENGTH = 128
BERT_LAYERS = 6
OPSET = 17
WARMUP = 3
MODELS = ("resnet18", "resnet50", "mobilenet_v2", "vit_b_16", "bert")

#: Float ops whose presence in ORT's optimised model means a linear layer ran in float.
FLOAT_LINEAR_OPS = frozenset({"Conv", "Gemm", "MatMul", "FusedConv", "FusedGemm", "FusedMatMul"})
#: Integer kernels ORT runs a quantized Conv/Gemm/MatMul in.
INT_LINEAR_OPS = frozenset(
    {
        "QLinearConv",
        "QGemm",
        "QLinearMatMul",
        "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul",
        "MatMulInteger",
        "ConvInteger",
    }
)

#: Goals from ../shared/BENCHMARKS.md: speedup and fidelity (SQNR dB or cosine) per model.
GOALS: dict[str, tuple[float, float | None]] = {
    "resnet18": (3.3, None),
    "resnet50": (3.5, None),
    "mobilenet_v2": (2.4, None),
    "vit_b_16": (2.7, 28.0),
    "bert": (2.7, 0.997),
}

Inputs = tuple[torch.Tensor, ...]


@attrs.define
class Case:
    """A model with its inputs: example, calibration and held-out evaluation batches."""

    name: str
    title: str
    model: nn.Module
    input_names: tuple[str, ...]
    example: Inputs
    calibration: list[Inputs]
    evaluation: list[Inputs]
    metric: str  # "sqnr" or "cosine"


@attrs.define
class Result:
    """What one quantizer gave on one model (``error`` set when it failed)."""

    quantizer: str
    path: Path | None = None
    seconds: float = math.nan
    peak_rss: float = math.nan
    rss_before: float = math.nan
    fidelity: float = math.nan
    ms: float = math.nan
    fp32_ms: float = math.nan
    ops: collections.Counter[str] = attrs.field(factory=collections.Counter)
    weight_dq: int = 0
    error: str | None = None

    @property
    def speedup(self) -> float:
        """FP32 median over INT8 median, from the same interleaved timing."""
        return self.fp32_ms / self.ms

    @property
    def float_left(self) -> int:
        """Float Conv/Gemm/MatMul ops in ORT's optimised model."""
        return sum(self.ops[op] for op in FLOAT_LINEAR_OPS)

    @property
    def linear_total(self) -> int:
        """Float plus integer Conv/Gemm/MatMul ops in ORT's optimised model."""
        return self.float_left + sum(self.ops[op] for op in INT_LINEAR_OPS)


# --------------------------------------------------------------------------- models


def _bn_reestimate(model: nn.Module, shape: Sequence[int], seed: int) -> None:
    """Replace BatchNorm running statistics by those of seeded random inputs."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over all batches
    generator = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(BN_SAMPLES // 8):
            model(torch.randn(8, *shape[1:], generator=generator))
    model.eval()


def _images(count: int, seed: int) -> list[Inputs]:
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(1, 3, 224, 224, generator=generator),) for _ in range(count)]


def vision_case(name: str) -> Case:
    """A torchvision model with random weights, BN re-estimated, ViT head initialised."""
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)()
    if name.startswith("vit"):
        head = model.heads.head
        nn.init.normal_(head.weight, std=0.02)
        nn.init.zeros_(head.bias)
    _bn_reestimate(model, (1, 3, 224, 224), seed=1)
    model.eval()
    return Case(
        name=name,
        title=name,
        model=model,
        input_names=("x",),
        example=_images(1, seed=2)[0],
        calibration=_images(CALIBRATION_SAMPLES, seed=3),
        evaluation=_images(EVAL_SAMPLES, seed=4),
        metric="sqnr",
    )


class Encoder(nn.Module):
    """A ``BertModel`` called with ``(input_ids, attention_mask)``; returns last_hidden_state."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The encoder's last hidden state, ``[batch, tokens, hidden]``."""
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _token_batches(count: int, seed: int, vocab: int) -> list[Inputs]:
    """Random token ids with a padded tail: 64 to 128 valid tokens per sample."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        ids = torch.randint(1000, vocab, (1, SEQUENCE_LENGTH), generator=generator)
        low, high = SEQUENCE_LENGTH // 2, SEQUENCE_LENGTH + 1
        valid = int(torch.randint(low, high, (1,), generator=generator))
        mask = torch.zeros(1, SEQUENCE_LENGTH, dtype=torch.int64)
        mask[:, :valid] = 1
        ids[:, valid:] = 0
        batches.append((ids, mask))
    return batches


def bert_case() -> Case:
    """A BERT-base-wide encoder (``BERT_LAYERS`` layers) with random weights."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        num_hidden_layers=BERT_LAYERS,
        hidden_size=768,
        num_attention_heads=12,
        intermediate_size=3072,
        attn_implementation="eager",
    )
    model = Encoder(BertModel(config, add_pooling_layer=False)).eval()
    return Case(
        name="bert",
        title=f"BERT encoder ({BERT_LAYERS}x768, seq {SEQUENCE_LENGTH})",
        model=model,
        input_names=("input_ids", "attention_mask"),
        example=_token_batches(1, seed=2, vocab=config.vocab_size)[0],
        calibration=_token_batches(CALIBRATION_SAMPLES, seed=3, vocab=config.vocab_size),
        evaluation=_token_batches(EVAL_SAMPLES, seed=4, vocab=config.vocab_size),
        metric="cosine",
    )


def make_case(name: str) -> Case:
    """The benchmark case called ``name``."""
    return bert_case() if name == "bert" else vision_case(name)


# --------------------------------------------------------------------------- ORT


def session_options(optimized_path: Path | None = None) -> ort.SessionOptions:
    """The protocol's settings: 2 intra-op threads, sequential, ORT's default spinning."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    return options


def session(path: Path) -> ort.InferenceSession:
    """A CPU session over ``path`` with :func:`session_options`."""
    return ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])


def feeds(sess: ort.InferenceSession, inputs: Inputs) -> dict[str, np.ndarray]:
    """``inputs`` by the session's input names (positionally)."""
    names = [i.name for i in sess.get_inputs()]
    return {name: x.numpy() for name, x in zip(names, inputs, strict=True)}


def optimized_ops(path: Path, scratch: Path) -> tuple[collections.Counter[str], int]:
    """Op types in ORT's optimised model of ``path``, and DQs of 8-bit initializers.

    A DequantizeLinear left on an 8-bit initializer is a weight dequantized on every run
    (its layer did not fuse); one on an int32 initializer is a bias added in float.
    """
    optimized = scratch / f"{path.stem}.optimized.onnx"
    ort.InferenceSession(str(path), session_options(optimized), providers=["CPUExecutionProvider"])
    model = onnx.load(str(optimized), load_external_data=False)
    eight_bit = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
    weights = {init.name for init in model.graph.initializer if init.data_type in eight_bit}
    ops = collections.Counter(node.op_type for node in model.graph.node)
    weight_dq = sum(
        1
        for node in model.graph.node
        if node.op_type == "DequantizeLinear" and node.input[0] in weights
    )
    return ops, weight_dq


def time_interleaved(
    sessions: Sequence[ort.InferenceSession], inputs: Inputs, runs: int
) -> list[float]:
    """Median milliseconds of each session, in alternating blocks (see time_alternating)."""
    prepared = [feeds(sess, inputs) for sess in sessions]
    calls = [
        (lambda sess=sess, feed=feed: sess.run(None, feed))
        for sess, feed in zip(sessions, prepared, strict=True)
    ]
    return time_alternating(calls, runs)


# --------------------------------------------------------------------------- fidelity


def reference_outputs(case: Case) -> list[np.ndarray]:
    """The torch FP32 model's outputs on the evaluation inputs."""
    with torch.no_grad():
        return [case.model(*inputs).numpy() for inputs in case.evaluation]


def fidelity(case: Case, reference: list[np.ndarray], path: Path) -> float:
    """SQNR (dB) or mean per-token cosine of ``path``'s ORT outputs against ``reference``."""
    sess = session(path)
    outputs = [sess.run(None, feeds(sess, inputs))[0] for inputs in case.evaluation]
    if case.metric == "sqnr":
        ref = np.concatenate([r.ravel() for r in reference]).astype(np.float64)
        out = np.concatenate([o.ravel() for o in outputs]).astype(np.float64)
        return float(20 * np.log10(np.linalg.norm(ref) / np.linalg.norm(ref - out)))
    cosines = []
    for ref, out, (_, mask) in zip(reference, outputs, case.evaluation, strict=True):
        valid = mask.numpy()[0].astype(bool)
        a = ref[0][valid].astype(np.float64)
        b = out[0][valid].astype(np.float64)
        cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
        cosines.extend(cos.tolist())
    return float(np.mean(cosines))


# --------------------------------------------------------------------------- quantizers


def export_fp32(case: Case, path: Path) -> Path:
    """``torch.onnx.export`` (TorchScript exporter, opset 17) of the FP32 model."""
    # Not under no_grad: the legacy exporter cannot export MultiheadAttention's fast path.
    torch.onnx.export(
        case.model,
        case.example,
        str(path),
        dynamo=False,
        opset_version=OPSET,
        input_names=list(case.input_names),
        output_names=["output"],
    )
    return path


def quantize_acekit(case: Case, path: Path, scratch: Path) -> Path:
    """``acekit.compile`` + ``export`` with the default settings and 32 calibration steps."""
    settings = acekit.Settings(training=TrainingSettings(stats_steps=CALIBRATION_SAMPLES))
    qm = acekit.compile(
        case.model,
        settings=settings,
        example_inputs=case.example,
        calibration_inputs=case.calibration,
        logs_dir=str(scratch / f"logs-{case.name}"),
    )
    return qm.export(path, overwrite=True)


class _Reader:
    """An ORT ``CalibrationDataReader`` over the case's calibration samples."""

    def __init__(self, case: Case) -> None:
        self._items = iter(
            [
                {name: x.numpy() for name, x in zip(case.input_names, inputs, strict=True)}
                for inputs in case.calibration
            ]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


def quantize_ort(case: Case, fp32: Path, path: Path, scratch: Path) -> Path:
    """``quant_pre_process`` + ``quantize_static`` (QDQ, per-channel s8 weights, u8 acts)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    reader_type = type("Reader", (_Reader, CalibrationDataReader), {})
    prepared = scratch / f"{case.name}.pre.onnx"
    try:
        quant_pre_process(str(fp32), str(prepared))
    except Exception:  # symbolic shape inference fails on some exports (MHA's Reshape)
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    quantize_static(
        str(prepared),
        str(path),
        reader_type(case),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return path


def measured(quantizer: str, step: Callable[[], Path]) -> Result:
    """Run one quantization step, recording wall time, peak RSS, or the error."""
    result = Result(quantizer)
    gc.collect()
    reset_peak_rss()
    result.rss_before = _current_rss_mib()
    start = time.perf_counter()
    try:
        result.path = step()
    except Exception as error:  # a failed quantizer is a row, not the end of the run
        result.error = f"{type(error).__name__}: {error}".strip()
        print(f"  {quantizer} failed:\n{traceback.format_exc()}", flush=True)
        return result
    result.seconds = time.perf_counter() - start
    result.peak_rss = peak_rss_mib()
    return result


def _current_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


# --------------------------------------------------------------------------- driver


def warm_up(scratch: Path) -> None:
    """Quantize a tiny model once, so the first benchmark is not charged for imports."""
    import onnxruntime.quantization  # noqa: F401  (ORT's quantizer imports, likewise)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()).eval()
    data = [(torch.randn(1, 3, 16, 16),) for _ in range(2)]
    tiny = Case("warm-up", "warm-up", model, ("x",), data[0], data, data, "sqnr")
    quantize_acekit(tiny, scratch / "warm-up.onnx", scratch)


def run_case(name: str, runs: int, scratch: Path) -> tuple[Case, list[Result]]:
    """Quantize ``name`` both ways and measure everything; results for acekit and ORT."""
    print(f"== {name}", flush=True)
    case = make_case(name)
    reference = reference_outputs(case)
    fp32 = export_fp32(case, scratch / f"{name}.fp32.onnx")
    results = [
        measured("acekit", lambda: quantize_acekit(case, scratch / f"{name}.acekit.onnx", scratch)),
        measured(
            "ORT quantize_static",
            lambda: quantize_ort(case, fp32, scratch / f"{name}.ort.onnx", scratch),
        ),
    ]
    ok = [r for r in results if r.path is not None]
    for result in ok:
        try:
            result.ops, result.weight_dq = optimized_ops(result.path, scratch)
            result.fidelity = fidelity(case, reference, result.path)
        except Exception as error:  # an invalid model is a failed row too
            result.error = f"ORT: {type(error).__name__}: {error}"
    ok = [r for r in ok if r.error is None]
    if ok:
        sessions = [session(fp32)] + [session(r.path) for r in ok]
        medians = time_interleaved(sessions, case.example, runs)
        for result, ms in zip(ok, medians[1:], strict=True):
            result.fp32_ms, result.ms = medians[0], ms
    for result in results:
        print(f"  {_row(case, result)}", flush=True)
        if result.error is None:
            print(f"    ops: {_noted(result)}", flush=True)
    return case, results


def _fidelity_text(case: Case, value: float) -> str:
    return f"{value:.1f} dB" if case.metric == "sqnr" else f"cos {value:.4f}"


def _noted(result: Result) -> str:
    parts = [f"{op} {count}" for op, count in sorted(result.ops.items(), key=lambda i: -i[1])]
    return ", ".join([*parts, f"(8-bit weight DQ left: {result.weight_dq})"])


def _row(case: Case, result: Result) -> str:
    if result.error is not None:
        return f"| {case.title} | {result.quantizer} | failed: {result.error[:160]} |" + " |" * 7
    return (
        f"| {case.title} | {result.quantizer} | {result.fp32_ms:.1f} | {result.ms:.1f} "
        f"| **{result.speedup:.2f}x** | {result.float_left}/{result.linear_total} "
        f"| {_fidelity_text(case, result.fidelity)} | {result.seconds:.1f} "
        f"| {result.peak_rss:.0f} (+{result.peak_rss - result.rss_before:.0f}) |"
    )


def _goal_rows(outcomes: list[tuple[Case, list[Result]]]) -> list[str]:
    rows = []
    for case, results in outcomes:
        by_name = {r.quantizer: r for r in results}
        ours, theirs = by_name["acekit"], by_name["ORT quantize_static"]
        speed_goal, fid_goal = GOALS[case.name]
        if ours.error is not None:
            rows.append(f"| {case.title} | ≥ {speed_goal}x | failed | failed | failed | failed |")
            continue
        speed = f"{ours.speedup:.2f}x: " + ("met" if ours.speedup >= speed_goal else "not met")
        if fid_goal is None:
            best = theirs.fidelity if theirs.error is None else math.nan
            fid_target = "≥ ORT's"
            met = not (ours.fidelity < best - 0.5)  # within 0.5 dB of ORT counts as level
        else:
            fid_target = f"≥ {fid_goal:g}" + (" dB" if case.metric == "sqnr" else "")
            met = ours.fidelity >= fid_goal
        fid = f"{_fidelity_text(case, ours.fidelity)}: " + ("met" if met else "not met")
        integer = f"{ours.float_left}/{ours.linear_total} float: " + (
            "met" if ours.float_left == 0 else "not met"
        )
        if theirs.error is None:
            faster = ours.seconds < theirs.seconds
            qtime = f"{ours.seconds:.1f} s vs {theirs.seconds:.1f} s: " + (
                "met" if faster else "not met"
            )
        else:
            qtime = f"{ours.seconds:.1f} s (ORT failed)"
        rows.append(
            f"| {case.title} | ≥ {speed_goal}x, {fid_target} | {speed} | {fid} | {integer} "
            f"| {qtime} |"
        )
    return rows


def _op_difference(ours: Result, theirs: Result) -> str:
    """Op types whose counts differ between the two optimised models."""
    diff = []
    for op in sorted(set(ours.ops) | set(theirs.ops)):
        if ours.ops[op] != theirs.ops[op]:
            diff.append(f"{op} {ours.ops[op]} vs {theirs.ops[op]}")
    return ", ".join(diff) or "none"


def _notes(outcomes: list[tuple[Case, list[Result]]]) -> list[str]:
    """One line per model with a goal not met: by how much, and the op-count evidence."""
    notes = []
    for case, results in outcomes:
        by_name = {r.quantizer: r for r in results}
        ours, theirs = by_name["acekit"], by_name["ORT quantize_static"]
        if ours.error is not None:
            notes.append(f"- {case.title}: acekit failed: {ours.error[:300]}")
            continue
        speed_goal, fid_goal = GOALS[case.name]
        missed = []
        if ours.speedup < speed_goal:
            missed.append(
                f"speedup {ours.speedup:.2f}x is {speed_goal / ours.speedup:.2f}x short of "
                f"{speed_goal}x"
            )
        if fid_goal is not None and ours.fidelity < fid_goal:
            missed.append(f"fidelity {_fidelity_text(case, ours.fidelity)} < {fid_goal:g}")
        if theirs.error is None and ours.seconds >= theirs.seconds:
            missed.append(f"quantization {ours.seconds / theirs.seconds:.1f}x ORT's time")
        if not missed:
            continue
        line = f"- {case.title}: " + "; ".join(missed) + "."
        if theirs.error is None:
            line += (
                f" ORT quantize_static here: {theirs.speedup:.2f}x, "
                f"{_fidelity_text(case, theirs.fidelity)}. Op counts, acekit vs ORT "
                f"(where they differ): {_op_difference(ours, theirs)}."
            )
        notes.append(line)
    return notes


def report(outcomes: list[tuple[Case, list[Result]]], runs: int) -> str:
    """The docs/benchmarks.md section: setup, results table, op counts, goals."""
    rows = [_row(case, r) for case, results in outcomes for r in results]
    ops = [
        f"| {case.title} | {r.quantizer} | {_noted(r)} |"
        for case, results in outcomes
        for r in results
        if r.error is None
    ]
    return f"""
Machine: {machine()}. {versions()}, ONNX Runtime {ort.__version__}, onnx {onnx.__version__}.
Date: {today()}. Script: `.venv/bin/python -m benchmarks.ptq` (`benchmarks/ptq.py`).

Setup: random weights with fixed seeds; BatchNorm statistics re-estimated on {BN_SAMPLES}
seeded random inputs; torchvision's zero-initialised ViT head re-initialised (std 0.02).
The encoder is `transformers.BertModel` ({BERT_LAYERS} layers, hidden 768, eager attention,
random weights), fed `input_ids` and `attention_mask` (64-128 valid tokens of
{SEQUENCE_LENGTH}), output `last_hidden_state`. Both quantizers see the same
{CALIBRATION_SAMPLES} calibration samples (batch 1). acekit: default settings
(`stats_steps={CALIBRATION_SAMPLES}`), `acekit.compile` + `export`. ORT: `quant_pre_process`
+ `quantize_static` (QDQ, `per_channel=True`, u8 activations, s8 weights, MinMax, all op
types). FP32 is `torch.onnx.export` (TorchScript exporter, opset {OPSET}). ORT CPU
provider, `ORT_ENABLE_ALL`, 2 intra-op threads, 1 inter-op, sequential, ORT's default
thread spinning; the FP32 model and both INT8 models timed in alternating blocks of 10 runs
with a 50 ms pause between blocks (A B C A B C ..., the first run of each block dropped:
spinning threads of the previous session would slow it), median of at least {runs} runs
each after warm-up, batch 1. (With spinning, single runs alternated A B A B starve each
other: FP32 resnet18 measured 16 ms instead of 8 ms.) Before the first model, acekit
quantizes a tiny conv once and ORT's quantization modules are imported, so neither is
charged for imports. Both rows of a model share the FP32 median.

Fidelity: against the torch FP32 model on {EVAL_SAMPLES} held-out inputs; SQNR =
20·log10(‖ref‖/‖ref - q‖) over all outputs; for the encoder, the cosine similarity of
`last_hidden_state` averaged over the valid tokens. "float left": float
Conv/Gemm/MatMul/FusedConv/FusedGemm/FusedMatMul in ORT's optimised model
(`optimized_model_filepath`) over those plus the integer kernels (QLinearConv, QGemm,
QLinearMatMul, MatMulIntegerToFloat, ...). Quantization time: wall seconds of `compile` +
`export` (acekit) or `quant_pre_process` + `quantize_static` (ORT); peak RSS is the
process's high-water mark during that step (reset before it), with the growth over the RSS
at its start in brackets.

| model | quantizer | FP32 ms | INT8 ms | speedup | float left | fidelity | quant s | peak RSS MiB |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Every op type in ORT's optimised models, by count; "8-bit weight DQ left" counts
DequantizeLinear on int8/uint8 initializers, i.e. weights dequantized on every run:

| model | quantizer | ops |
|---|---|---|
{chr(10).join(ops)}

Goals (`../shared/BENCHMARKS.md`: ahead of every peer; for the CNNs the fidelity goal is
taken as "no worse than ORT", within 0.5 dB):

| model | goal | acekit speedup | acekit fidelity | integer kernels | quant time vs ORT |
|---|---|---|---|---|---|
{chr(10).join(_goal_rows(outcomes))}

Goals not met, by how much, with the optimised-graph evidence:

{chr(10).join(_notes(outcomes)) or "- none"}
"""


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the arguments, run every model, write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset")
    parser.add_argument("--runs", type=int, default=30, help="timed runs per model (>= 30)")
    parser.add_argument("--work-dir", type=Path, help="keep the ONNX files here")
    parser.add_argument("--no-write", action="store_true", help="print, do not write docs")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    torch.set_num_threads(2)
    outcomes: list[tuple[Case, list[Result]]] = []
    with tempfile.TemporaryDirectory(prefix="acekit-ptq-bench-") as tmp:
        scratch = args.work_dir or Path(tmp)
        scratch.mkdir(parents=True, exist_ok=True)
        warm_up(scratch)
        for name in names:
            outcomes.append(run_case(name, args.runs, scratch))
            gc.collect()
    body = report(outcomes, args.runs)
    print(body)
    if not args.no_write:
        write_section("PTQ vs ONNX Runtime quantize_static (benchmarks/ptq.py)", body)


if __name__ == "__main__":
    main()
