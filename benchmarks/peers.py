"""The peers issue 12 compares acekit's post-training algorithms against, on any model.

Each function takes a float ``model`` (left unchanged: every peer works on a deep copy)
and calibration ``batches`` (a list of tuples of model inputs, exactly what acekit's
``calibration_inputs`` reads) and returns a torch module that simulates the peer's
quantized model, so every benchmark scores the peers and acekit the same way:

* :func:`nncf_ptq`: NNCF's default post-training quantization (min/max ranges, fast
  bias correction; ``transformer=True`` passes ``ModelType.TRANSFORMER``, which turns on
  SmoothQuant), W8A8.
* :func:`aimet_adaround`: AIMET's recipe: cross-layer equalization (with BatchNorm
  folding and high-bias absorption), AdaRound of every conv/linear weight, then
  QuantizationSimModel with the AdaRounded encodings frozen and 8-bit activations
  calibrated (aimet-torch 2.x ships no bias correction for PyTorch).
* :func:`gptq_weights`: GPTQ as GPTQModel implements it, layer by layer in execution
  order (each layer's Hessian from the inputs the already-rounded layers before it
  feed it), per-channel symmetric weights without groups; the result is the float
  model with GPTQ's dequantized weights, which the caller quantizes with acekit's
  8-bit activations (GPTQ is a weight-only method).

:func:`measure` runs one of them (or acekit) and reports its wall time and the process's
peak resident memory while it ran. The peers are the ``bench`` extra of pyproject.toml.
"""

from __future__ import annotations

import copy
import itertools
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from benchmarks.common import peak_rss_mib, reset_peak_rss

Batches = Sequence[tuple[torch.Tensor, ...]]
T = TypeVar("T")


@dataclass(frozen=True)
class Cost:
    """Wall time and peak resident memory of one quantization run."""

    seconds: float
    peak_mib: float


def load() -> str:
    """Import every peer (so no measured run pays an import); their versions, for the report."""
    from importlib.metadata import version

    import aimet_torch  # noqa: F401
    import gptqmodel  # noqa: F401
    import nncf  # noqa: F401

    names = ("nncf", "aimet-torch", "gptqmodel")
    return ", ".join(f"{name} {version(name)}" for name in names)


def measure(run: Callable[[], T]) -> tuple[T, Cost]:
    """Run ``run()`` and return its result with its wall time and peak RSS (MiB)."""
    reset_peak_rss()
    started = time.perf_counter()
    result = run()
    return result, Cost(time.perf_counter() - started, peak_rss_mib())


def nncf_ptq(model: nn.Module, batches: Batches, transformer: bool) -> nn.Module:
    """NNCF ``quantize`` with its defaults (fast bias correction on) at W8A8.

    W8A8 only: NNCF's hardware configs admit only 8-bit quantizers for ``quantize``
    (4-bit weights are ``compress_weights``, weight-only, not W4A8).
    """
    import nncf

    return nncf.quantize(
        copy.deepcopy(model).eval(),
        nncf.Dataset(list(batches)),
        subset_size=len(batches),
        model_type=nncf.ModelType.TRANSFORMER if transformer else None,
    )


def aimet_adaround(
    model: nn.Module, batches: Batches, bits: int, iterations: int | None = None
) -> nn.Module:
    """AIMET CLE + AdaRound at W``bits``A8 (per-channel weights); the QuantSim model.

    ``iterations=None`` keeps AIMET's default (10 000 per layer at 8 bits, 15 000 below).
    """
    from aimet_torch.adaround import Adaround, AdaroundParameters
    from aimet_torch.common.defs import QuantScheme
    from aimet_torch.cross_layer_equalization import equalize_model
    from aimet_torch.quantsim import QuantizationSimModel

    config = _aimet_per_channel_config()
    float_model = copy.deepcopy(model).eval()
    dummy = tuple(batches[0])
    equalize_model(float_model, dummy_input=dummy)

    def forward(module: nn.Module, batch: Any) -> Any:
        return module(*batch)

    params = AdaroundParameters(
        data_loader=list(batches),
        num_batches=len(batches),
        default_num_iterations=iterations,
        forward_fn=forward,
    )
    scheme = QuantScheme.post_training_tf_enhanced
    with tempfile.TemporaryDirectory(prefix="aimet-") as folder:
        rounded = Adaround.apply_adaround(
            float_model,
            dummy,
            params,
            path=folder,
            filename_prefix="adaround",
            default_param_bw=bits,
            default_quant_scheme=scheme,
            default_config_file=config,
        )
        sim = QuantizationSimModel(
            rounded,
            dummy_input=dummy,
            quant_scheme=scheme,
            default_output_bw=8,
            default_param_bw=bits,
            config_file=config,
        )
        sim.set_and_freeze_param_encodings(str(Path(folder) / "adaround.encodings"))

    def calibrate(module: nn.Module, _: Any) -> None:
        with torch.no_grad():
            for batch in batches:
                module(*batch)

    sim.compute_encodings(calibrate, None)
    return sim.model


def _aimet_per_channel_config() -> str:
    """AIMET's own per-channel config file (weights per channel, like acekit's targets)."""
    import aimet_torch

    folder = Path(aimet_torch.__file__).parent / "common" / "quantsim_config"
    path = folder / "default_config_per_channel.json"
    json.loads(path.read_text())  # fails here, clearly, if the package moved it
    return str(path)


def gptq_weights(model: nn.Module, batches: Batches, bits: int) -> nn.Module:
    """The float model with GPTQModel's GPTQ-rounded conv/linear weights (BatchNorm folded)."""
    from gptqmodel.quantization.config import QuantizeConfig
    from gptqmodel.quantization.gptq import GPTQ

    rounded = _fold_batch_norms(copy.deepcopy(model).eval())
    layers = _layers_in_execution_order(rounded, batches)
    config = QuantizeConfig(
        bits=bits, group_size=-1, sym=True, desc_act=False, act_group_aware=False
    )
    for layer in layers:
        gptq = GPTQ(layer, config)
        gptq.quantizer.configure(perchannel=True)  # as GPTQModel's own processor does

        def collect(module: nn.Module, args: tuple[Any, ...], output: Any, g: Any = gptq) -> None:
            g.add_batch(args[0].detach(), output.detach())

        handle = layer.register_forward_hook(collect)
        with torch.no_grad():
            for batch in batches:
                rounded(*batch)
        handle.remove()
        weight = gptq.quantize()[0]
        target = layer.weight
        assert isinstance(target, torch.Tensor)
        with torch.no_grad():
            target.copy_(weight.reshape(target.shape).to(target.dtype))
        gptq.free()
    return rounded


def _layers_in_execution_order(model: nn.Module, batches: Batches) -> list[nn.Module]:
    """The model's Linear and ungrouped Conv2d modules in the order one forward calls them."""
    order: list[nn.Module] = []

    def seen(module: nn.Module, *_: Any) -> None:
        if module not in order:
            order.append(module)

    handles = [
        m.register_forward_hook(seen)
        for m in model.modules()
        if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1)
    ]
    with torch.no_grad():
        model(*batches[0])
    for handle in handles:
        handle.remove()
    return order


def _fold_batch_norms(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm2d that directly follows a Conv2d inside an ``nn.Sequential``."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for first, second in itertools.pairwise(names):
            conv, norm = module._modules[first], module._modules[second]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                module._modules[first] = fuse_conv_bn_eval(conv, norm)
                module._modules[second] = nn.Identity()
    return model
