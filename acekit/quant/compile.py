"""``acekit.compile``: parse, clean, quantize and calibrate a model for a target.

The stages are passes of one pipeline (the default is built from the settings; users may
give their own as a :class:`~acekit.passes.Pipeline` or a spec string); this module
checks the inputs before any work, opens the run log, and turns the quantized graph into
a :class:`~acekit.runtime.quantized.QuantizedModule`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from acekit.api import check_example_inputs, input_names, parse_as_declared
from acekit.dims import FreeDims, declaring, infer_free_dims
from acekit.ir.graph import Graph
from acekit.logging import get_logger, run_logging
from acekit.passes import Pipeline
from acekit.plugin import plugin_versions
from acekit.quant.algorithms import split_algorithms
from acekit.quant.context import QuantContext, use_context
from acekit.quant.data import CalibrationData, Select
from acekit.quant.layers import check_layer_keys
from acekit.quant.seeding import seeded
from acekit.quant.targets import resolve_target, target_rules, validate_target_options
from acekit.runtime.distributed import check_process_group
from acekit.runtime.quantized import CompileReport, QuantizedModule
from acekit.runtime.shapes import fill_unknown_types
from acekit.runtime.symbolic import generalize_types
from acekit.settings import QuantizationAlgorithm, Settings

if TYPE_CHECKING:
    from acekit.plugin.interfaces import Parser

log = get_logger(__name__)

#: torch.fx's tracer patches module-level state while it traces: two traces at once in
#: two threads break each other, so concurrent runs parse one at a time.
_PARSE_LOCK = threading.Lock()

#: Passes that read calibration data: a pipeline with one of them needs it up front.
CALIBRATING_PASSES = frozenset({"calibrate", "auto-skip"})


def default_pipeline(settings: Settings) -> str:
    """The pipeline spec ``compile`` runs when the caller gives none.

    For quantization-aware training, ``qat-bn`` runs first so that BatchNorm keeps
    training (``cleanup`` would fold it away). The settings' ``algorithms`` go around
    ``ptq`` by their stage (:mod:`acekit.quant.algorithms`); ``auto-skip`` comes before
    the after-calibration ones, which must know which layers stay float.
    """
    qat = settings.quantization.quantization_algorithm is QuantizationAlgorithm.QAT
    before, after = split_algorithms(settings.quantization.algorithms)
    steps = ["qat-bn", "cleanup"] if qat else ["cleanup"]
    steps += [*before, "ptq"]
    if settings.quantization.automatic_skip_quantization:
        steps.append("auto-skip")
    return ",".join([*steps, *after])


def compile(
    model: Any,
    *,
    example_inputs: Any,
    calibration_inputs: Any = None,
    settings: Settings | None = None,
    select: Select | None = None,
    pipeline: Pipeline | str | None = None,
    parser: str | Parser | None = None,
    logs_dir: str | os.PathLike[str] | None = "logs",
    dynamic_shapes: Any = None,
) -> QuantizedModule:
    """Quantize ``model`` for the settings' target; the result simulates it in torch.

    ``example_inputs`` are what ``model(*example_inputs)`` is called with (tracing);
    ``calibration_inputs`` a tensor, a tuple or dict of tensors, or batches of them (a
    list or a DataLoader, with ``select`` picking the model inputs out of a batch).
    ``pipeline`` replaces the default pipeline (:func:`default_pipeline`). ``parser``
    names a registered parser (``"fx"``, ``"torchscript"``) or is a parser object, such
    as ``acekit_fx.FxParser(leaf_modules=(MyBlock,))``; ``None`` lets the plugins
    choose (see :func:`acekit.parse`). The run's log file goes to ``logs_dir``
    (``None``: no file). The model is never modified, nor are the caller's random
    generators (the seed applies inside the run only). Everything is checked
    (settings, target, data) before parsing.

    The batch dim of every input, the sequence dim of integer token inputs and any dim
    where the first calibration batch differs from the example are free: they keep
    symbolic sizes through the whole job, so calibration, QAT and the export run at
    other sizes. ``dynamic_shapes`` (as for ``torch.export``: per input, ``{dim: name}``)
    replaces that policy for the inputs it names (:mod:`acekit.dims`).
    """
    inputs = check_example_inputs(model, example_inputs)
    return quantize_parsed(
        lambda: parse_as_declared(model, inputs, parser),
        example_inputs=inputs,
        input_names=input_names(model, len(inputs)),
        calibration_inputs=calibration_inputs,
        settings=settings,
        select=select,
        pipeline=pipeline,
        logs_dir=logs_dir,
        dynamic_shapes=dynamic_shapes,
    )


def quantize_parsed(
    parse_model: Callable[[], Graph],
    *,
    example_inputs: tuple[Any, ...],
    input_names: Sequence[str],
    calibration_inputs: Any = None,
    settings: Settings | None = None,
    select: Select | None = None,
    pipeline: Pipeline | str | None = None,
    logs_dir: str | os.PathLike[str] | None = "logs",
    dynamic_shapes: Any = None,
) -> QuantizedModule:
    """:func:`compile` for a model that ``parse_model()`` parses (used by backends).

    Settings, target, pipeline and calibration data are checked before ``parse_model``
    runs, so bad input costs no parsing.
    """
    settings = settings if settings is not None else Settings()
    if not isinstance(settings, Settings):
        raise TypeError(f"settings must be an acekit.Settings, got {type(settings).__name__}")
    if settings.distributed.multi_gpu:
        check_process_group()
    target = resolve_target(settings.deployment.target_framework)
    rules = target_rules(
        target, validate_target_options(target, settings.deployment.target_options)
    )
    steps = (
        pipeline
        if isinstance(pipeline, Pipeline)
        else Pipeline.from_spec(pipeline or default_pipeline(settings))
    )
    data = None
    first_batch = None
    if calibration_inputs is not None or _needs_data(steps):
        data = CalibrationData(
            calibration_inputs,
            example_inputs,
            input_names,
            select=select,
            keep=replayed_batches(steps, settings),
        )
        data.check_sizes = False  # the first batch says which dims differ: they are free
        first_batch = data.first()
        data.check_sizes = True
    free = infer_free_dims(
        example_inputs, input_names, first_batch=first_batch, dynamic_shapes=dynamic_shapes
    )
    if data is not None and first_batch is not None:
        data.free_dims = free
        data.check(first_batch, 0)  # dynamic_shapes= may keep a differing dim static
    device = _device_of(example_inputs)
    with (
        seeded(settings.training.random_seed),
        run_logging(logs_dir, extra_versions=plugin_versions()) as run,
    ):
        run.log_block(settings.format())
        log.info(f"Target: {target.title}: {rules.reason}")
        started = time.perf_counter()
        with _PARSE_LOCK, declaring(free):
            graph = parse_model()
            free = _generalize(graph, example_inputs, free, data)
        parsed, parsed_ops = len(graph), count_ops(graph)
        check_layer_keys(graph, _layer_names(settings))
        log.info(f"Running pipeline: {steps.spec()}")
        context = QuantContext(settings, rules, target.name, data, device)
        with use_context(context):
            result = steps.run(graph)
        graph = result.graph
        if fill_unknown_types(graph, example_inputs):
            generalize_types(graph, example_inputs, free)
        learnable = settings.quantization.quantization_algorithm is QuantizationAlgorithm.QAT
        module = QuantizedModule(graph, settings, learnable_scales=learnable, rules=rules)
        _log_processed(graph)
        module.report = CompileReport(
            pipeline=steps.spec(),
            parsed_nodes=parsed,
            parsed_ops=parsed_ops,
            final_nodes=len(graph),
            final_ops=count_ops(graph),
            removed=tuple(
                (name, int(r.stats["removed"]))
                for name, r in result.results
                if "removed" in r.stats
            ),
            quantized=int(context.notes.get("quantized", 0)),
            skipped=int(context.notes.get("skipped", 0)),
            calibration_batches=int(context.notes.get("calibration_batches", 0)),
            seconds=time.perf_counter() - started,
            log_path=run.path,
        )
    module = module.to(device)
    return module.distribute() if settings.distributed.multi_gpu else module


def _generalize(
    graph: Graph, inputs: Sequence[Any], free: FreeDims, data: CalibrationData | None
) -> FreeDims:
    """Give ``graph`` symbolic sizes for ``free``; log which dims are free and which the
    model fixes. Returns the dims that stay free."""
    fixed = generalize_types(graph, inputs, free)
    for dim in fixed:
        log.warning(f"Dynamic dim kept static: {dim.describe()}", node=dim.node)
        if data is not None:
            data.fixed_reasons[(dim.dim.input, dim.dim.dim)] = (
                f"{dim.dim.describe()} is fixed by the model at node '{dim.node}' "
                f"(subgraph '{dim.subgraph}')"
            )
    free = free.without([f.dim for f in fixed])
    if data is not None:
        data.free_dims = free
    log.info(f"Free dims: {free.describe()}")
    return free


def _layer_names(settings: Settings) -> list[str]:
    names = list(settings.layers)
    names += [
        layer.skip_quantization_until
        for layer in settings.layers.values()
        if layer.skip_quantization_until is not None
    ]
    return names


def count_ops(graph: Graph) -> int:
    """Nodes of ``graph`` that compute (not inputs, outputs, parameters or constants)."""
    return sum(1 for node in graph.nodes if node.op not in _NOT_OPS)


_NOT_OPS = frozenset({"input", "output", "parameter", "constant"})


def _needs_data(pipeline: Pipeline) -> bool:
    return bool(_readers(pipeline))


def _readers(pipeline: Pipeline) -> list[Any]:
    return [
        step
        for step in pipeline.flatten()
        if step.name in CALIBRATING_PASSES or hasattr(step, "calibration_batches")
    ]


def replayed_batches(pipeline: Pipeline, settings: Settings) -> int:
    """How many leading batches a one-shot data source must keep for ``pipeline``.

    The first pass that reads calibration data consumes the source; every later reader
    replays from the first batch, so the source keeps the most any later reader asks
    for (``auto-skip`` after ``calibrate``: its ``batches``), not the whole data set. A
    pass states what it reads with ``calibration_batches(settings)``; one that does not
    is taken to read ``stats_steps``.
    """
    later = _readers(pipeline)[1:]
    return max((_demand(step, settings) for step in later), default=0)


def _demand(step: Any, settings: Settings) -> int:
    demand = getattr(step, "calibration_batches", None)
    return int(demand(settings)) if callable(demand) else settings.training.stats_steps


def _device_of(inputs: Sequence[Any]) -> torch.device:
    for item in inputs:
        if isinstance(item, torch.Tensor):
            return item.device
    return torch.device("cpu")


def _log_processed(graph: Any) -> None:
    nodes = [n for n in graph.nodes if n.op not in ("input", "output")]
    for i, node in enumerate(nodes, 1):
        log.info(f"Quantization: Processed {i}/{len(nodes)} - '{node.name}'")
    log.info("Quantization: done")
