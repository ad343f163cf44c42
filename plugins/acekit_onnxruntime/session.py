"""Running a deployed model in ONNX Runtime on the CPU, for checks and timings."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch


class OrtRunner:
    """An ORT CPU session called like a module: torch tensors in, torch tensors out.

    Sessions use ``threads`` intra-op threads and sequential execution, with ORT's
    default thread spinning (what deployments run with; time sessions in blocks, see
    :func:`acekit.job.time_alternating`, so that one session's spinning threads do not
    slow another's run).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        threads: int = 2,
        optimized_path: str | os.PathLike[str] | None = None,
        session_config: dict[str, str] | None = None,
    ) -> None:
        """A session on ``path``; ``session_config`` entries go to ORT's session options."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        if optimized_path is not None:
            options.optimized_model_filepath = os.fspath(optimized_path)
        for key, value in (session_config or {}).items():
            options.add_session_config_entry(key, value)
        self.session = ort.InferenceSession(
            os.fspath(path), options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, *inputs: Any) -> list[torch.Tensor]:
        """Run the model on ``inputs`` (tensors or arrays); every output as a tensor."""
        feed = {
            name: value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
            for name, value in zip(self.input_names, inputs, strict=True)
        }
        return [torch.from_numpy(np.asarray(out)) for out in self.session.run(None, feed)]


#: ORT kernels that compute on integers (its QDQ fusions produce them).
INTEGER_KERNELS = frozenset(
    {
        "QGemm",
        "ConvInteger",
        "MatMulInteger",
        "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul",
        "QAttention",
    }
)


def integer_op_count(path: str | os.PathLike[str]) -> int:
    """How many ops of the model at ``path`` ORT's CPU provider runs in integer kernels.

    Read from the graph ORT optimises the model into (what it executes): ``QLinear*``
    ops and the kernels of :data:`INTEGER_KERNELS`.
    """
    import onnx

    with tempfile.TemporaryDirectory(prefix="acekit-ort-") as scratch:
        optimized = Path(scratch) / "optimized.onnx"
        OrtRunner(path, threads=1, optimized_path=optimized)
        model = onnx.load(str(optimized), load_external_data=False)
    return sum(
        1
        for node in model.graph.node
        if node.op_type.startswith("QLinear") or node.op_type in INTEGER_KERNELS
    )
