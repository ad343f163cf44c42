"""Running an exported TensorRT model: a TensorRT engine on a GPU, else ONNX Runtime.

On a machine without a GPU or without the ``tensorrt`` package the QDQ ONNX runs in
ONNX Runtime's CPU provider, which executes the same Q/DQ arithmetic (INT8 and FP8):
the file's fidelity can be checked anywhere; its speed only on a GPU.
"""

from __future__ import annotations

import os
from typing import Any

import torch

#: ORT's session option for the compute type of its 4-bit MatMulNBits kernels.
_ACCURACY_LEVEL = "session.qdq_matmulnbits_accuracy_level"


class TensorRTNotInstalledError(ImportError):
    """TensorRT is requested but the package or a GPU is missing."""


def load(path: str | os.PathLike[str], *, engine: str = "auto", threads: int = 2) -> Any:
    """A callable running the model at ``path``.

    ``engine`` is ``"tensorrt"`` (build a TensorRT engine; needs a GPU and ``pip install
    acekit[tensorrt]``), ``"onnxruntime"`` (CPU) or ``"auto"`` (TensorRT when available).
    """
    if engine not in ("auto", "tensorrt", "onnxruntime"):
        raise ValueError(f"engine must be auto, tensorrt or onnxruntime; got {engine!r}")
    available = tensorrt_available()
    if engine == "tensorrt" and not available:
        raise TensorRTNotInstalledError(
            "running a TensorRT engine needs an NVIDIA GPU and the tensorrt package: "
            "pip install 'acekit[tensorrt]'"
        )
    if engine == "tensorrt" or (engine == "auto" and available):
        from acekit_tensorrt.engine import EngineRunner

        return EngineRunner(path)
    from acekit.plugin import get_registry

    # The ONNX Runtime target runs QDQ ONNX on the CPU; found like any plugin's target.
    # ORT fuses int4 DQ -> MatMul into MatMulNBits, which by default rounds activations
    # to int8; TensorRT's W4A16 keeps them float, and so does accuracy level 1 (fp32).
    return (
        get_registry()
        .targets["onnxruntime"]
        .load(path, threads=threads, session_config={_ACCURACY_LEVEL: "1"})
    )


def tensorrt_available() -> bool:
    """Whether the tensorrt package imports and a CUDA GPU is present."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()
