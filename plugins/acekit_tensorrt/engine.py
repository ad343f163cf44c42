"""Building and running a TensorRT engine from an exported ONNX model (needs a GPU).

The engine is built with explicit quantization: TensorRT runs INT8 or FP8 exactly where
the model's Q/DQ pairs say and picks FP16 or FP32 kernels elsewhere (TensorRT 10; from
TensorRT 11, whose networks are strongly typed, float layers run in the file's float
type). The first
dimension of every input is dynamic (acekit exports a ``batch`` axis); the optimisation
profile covers batch 1 to ``max_batch``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto

#: Zero-point element types that need a builder flag beyond INT8.
_FLAG_OF_TYPE = {TensorProto.FLOAT8E4M3FN: "FP8", TensorProto.INT4: "INT4"}


def precision_flags(path: str | os.PathLike[str]) -> list[str]:
    """The TensorRT builder flags a model needs: FP16 always, plus INT8/FP8/INT4 as used."""
    model = onnx.load(os.fspath(path), load_external_data=False)
    types = {init.name: init.data_type for init in model.graph.initializer}
    flags = ["FP16"]
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            flag = _FLAG_OF_TYPE.get(types.get(node.input[2], TensorProto.INT8), "INT8")
            if flag not in flags:
                flags.append(flag)
    return flags


def build_engine(path: str | os.PathLike[str], *, max_batch: int = 8) -> bytes:
    """A serialized TensorRT engine for the ONNX model at ``path``."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # TensorRT 11 removed the precision builder flags: explicit quantization there is a
    # strongly typed network whose Q/DQ types decide; before it, the flags enable them.
    weakly_typed = hasattr(trt.BuilderFlag, "INT8")
    strongly_typed = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(0 if weakly_typed else strongly_typed)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {path}: {errors}")
    config = builder.create_builder_config()
    if weakly_typed:
        for flag in precision_flags(path):
            config.set_flag(getattr(trt.BuilderFlag, flag))
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = list(tensor.shape)
        low, high = [1, *shape[1:]], [max_batch, *shape[1:]]
        profile.set_shape(tensor.name, low, low, high)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {path}")
    return bytes(serialized)


class EngineRunner:
    """A TensorRT engine called like a module: tensors in, CUDA tensors out."""

    def __init__(self, path: str | os.PathLike[str], *, max_batch: int = 8) -> None:
        import tensorrt as trt

        self.trt = trt
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(build_engine(path, max_batch=max_batch))
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == mode]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) != mode]

    def __call__(self, *inputs: Any) -> list[torch.Tensor]:
        """Run the engine on ``inputs``; every output as a CUDA tensor."""
        keep = []
        for name, value in zip(self.inputs, inputs, strict=True):
            tensor = torch.as_tensor(value).cuda().contiguous()
            keep.append(tensor)
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        results = []
        for name in self.outputs:
            numpy_type = self.trt.nptype(self.engine.get_tensor_dtype(name))
            dtype = torch.from_numpy(np.empty(0, numpy_type)).dtype
            out = torch.empty(
                tuple(self.context.get_tensor_shape(name)), dtype=dtype, device="cuda"
            )
            self.context.set_tensor_address(name, out.data_ptr())
            results.append(out)
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT failed to run the engine")
        stream.synchronize()
        return results
