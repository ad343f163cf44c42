"""acekit's intermediate representation: graphs of tensor ops with quantization specs."""

from acekit.ir.core_ops import OPS, core_op_table
from acekit.ir.graph import Graph, GraphError, Node, Use, Value
from acekit.ir.printer import format_graph, format_node
from acekit.ir.quant import Granularity, QuantSpec
from acekit.ir.schema import AttrSpec, OpSchema, OpTable, UnknownOpError
from acekit.ir.serialize import GraphFileError, load_graph, save_graph
from acekit.ir.tensor_type import TensorType, dtype_from_name, dtype_name
from acekit.ir.verify import VerificationError, verify

__all__ = [
    "OPS",
    "AttrSpec",
    "Granularity",
    "Graph",
    "GraphError",
    "GraphFileError",
    "Node",
    "OpSchema",
    "OpTable",
    "QuantSpec",
    "TensorType",
    "UnknownOpError",
    "Use",
    "Value",
    "VerificationError",
    "core_op_table",
    "dtype_from_name",
    "dtype_name",
    "format_graph",
    "format_node",
    "load_graph",
    "save_graph",
    "verify",
]
