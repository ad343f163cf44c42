"""TorchScript's own nodes: constants, attributes, lists and tuples, type queries.

None of them becomes an IR node: they build the entries the ops read (a list of sizes,
a submodule, a parameter) and are run by the walker directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import torch

from acekit_torchscript.entries import (
    ModuleEntry,
    TensorEntry,
    UnknownEntry,
    example_of,
    is_static,
    resolve,
)
from acekit_torchscript.evaluate import evaluate
from acekit_torchscript.jit import module_attr
from acekit_torchscript.scalars import SHAPE_QUERIES, shape_query
from acekit_torchscript.schemas import node_schema

if TYPE_CHECKING:
    from acekit_torchscript.walker import Frame, Walker

Handler = Callable[["Walker", torch._C.Node, "Frame"], None]


def constant(walker: Walker, node: torch._C.Node, frame: Frame) -> None:
    """``prim::Constant``: a static value (constant tensors are copied)."""
    output = node.output()
    if output.type().kind() == "FunctionType":
        # Left behind by inlining the calls that used it; nothing reads it.
        frame.bind(output, UnknownEntry())
        return
    frame.bind(output, own(output.toIValue()))


def get_attr(walker: Walker, node: torch._C.Node, frame: Frame) -> None:
    """``prim::GetAttr``: a submodule, a parameter node, or a static attribute."""
    owner = frame.get(node.inputsAt(0))
    name = node.s("name")
    if isinstance(owner, UnknownEntry):
        frame.bind(node.output(), UnknownEntry())
        return
    if not isinstance(owner, ModuleEntry):
        frame.bind(node.output(), getattr(owner, name))
        return
    value = module_attr(owner.module, name)
    path = (*owner.path, name)
    entry: Any
    if isinstance(value, torch._C.ScriptModule):
        entry = ModuleEntry(path, value)
    elif isinstance(value, torch.Tensor):
        # Read by the model's own code (``self.class_token``): the node is named and
        # placed like the fx parser's get_attr (``encoder_pos_embedding``).
        user_code = not frame.module.is_torch_layer
        entry = walker.module_tensor(owner, name, scope=frame.module.scope, named_by_path=user_code)
        if entry is None:
            # A tensor attribute outside the state dict: a constant of this model.
            entry = walker.builder.model_constant(path, value, frame.module.scope)
    else:
        # Plain Python attributes (``training``, sizes, flags) are static.
        entry = own(value)
    frame.bind(node.output(), entry)


def set_attr(walker: Walker, node: torch._C.Node, frame: Frame) -> None:
    """``prim::SetAttr``: fine when it writes what is there; a graph has no module state."""
    owner = frame.get(node.inputsAt(0))
    value = frame.get(node.inputsAt(1))
    name = node.s("name")
    if isinstance(owner, ModuleEntry) and is_static(value):
        current = module_attr(owner.module, name)
        if not isinstance(current, torch.Tensor) and current == value:
            return
    walker.builder.report_unsupported(
        frame.site(node), f"the model writes its attribute {name!r} while running"
    )


def construct_list(walker: Walker, node: torch._C.Node, frame: Frame) -> None:
    """``prim::ListConstruct``: a Python list of the entries."""
    walker.bind_outputs(node, frame, [walker.inputs(node, frame)])


def construct_tuple(walker: Walker, node: torch._C.Node, frame: Frame) -> None:
    """``prim::TupleConstruct``: a Python tuple of the entries."""
    walker.bind_outputs(node, frame, [tuple(walker.inputs(node, frame))])


def construct_dict(walker: Walker, node: torch._C.Node, frame: Frame) -> None:
    """``prim::DictConstruct``: keys and values alternate."""
    items = walker.inputs(node, frame)
    walker.bind_outputs(node, frame, [dict(zip(items[0::2], items[1::2], strict=True))])


def unpack(walker: Walker, node: torch._C.Node, frame: Frame) -> None:
    """``prim::ListUnpack`` / ``prim::TupleUnpack``."""
    packed = frame.get(node.inputsAt(0))
    if isinstance(packed, UnknownEntry):
        walker.bind_unknown(node, frame, packed.example)
        return
    walker.bind_outputs(node, frame, [resolve(item) for item in packed])


def tuple_index(walker: Walker, node: torch._C.Node, frame: Frame) -> None:
    """``prim::TupleIndex``."""
    packed, index = walker.inputs(node, frame)
    walker.bind_outputs(node, frame, [resolve(packed[index])])


def passthrough(walker: Walker, node: torch._C.Node, frame: Frame) -> None:
    """Type refinements (``prim::unchecked_cast``): the value itself."""
    frame.bind(node.output(), frame.get(node.inputsAt(0)))


def bind_none(walker: Walker, node: torch._C.Node, frame: Frame) -> None:
    """Nodes whose results carry nothing a graph needs (``prim::Uninitialized``)."""
    walker.bind_outputs(node, frame, [None] * node.outputsSize())


def ignore(walker: Walker, node: torch._C.Node, frame: Frame) -> None:
    """Nodes without effect on the graph (``prim::Print``)."""


def is_instance(walker: Walker, node: torch._C.Node, frame: Frame) -> None:
    """``prim::isinstance``: TorchScript leaves it for Optional/Union refinements, which
    the example values decide."""
    value = example_of(frame.get(node.inputsAt(0)))
    types = [str(t) for t in node.tys("types")]
    frame.bind(node.output(), any(_matches(value, name) for name in types))


def tensor_property(walker: Walker, node: torch._C.Node, frame: Frame) -> None:
    """Shape queries give numbers the graph computes; dtype and device are static."""
    inputs = walker.inputs(node, frame)
    if any(isinstance(entry, UnknownEntry) for entry in inputs):
        walker.bind_unknown(node, frame)
        return
    results = evaluate(node, node_schema(node), [example_of(entry) for entry in inputs])
    kind = str(node.kind())
    tensor = inputs[0]
    if not isinstance(tensor, TensorEntry) or kind not in SHAPE_QUERIES:
        walker.bind_outputs(node, frame, results)
        return
    result = shape_query(kind, tensor, inputs, results[0], frame.site(node))
    walker.bind_outputs(node, frame, [result])


def identity_test(walker: Walker, node: torch._C.Node, frame: Frame) -> None:
    """``x is None`` / ``x is not None``."""
    left, right = walker.inputs(node, frame)
    same = left is right or (left is None and right is None)
    if str(node.kind()) == "aten::__isnot__":
        same = not same
    frame.bind(node.output(), same)


#: Handlers of the nodes above, by kind.
PRIMS: Final[dict[str, Handler]] = {
    "prim::Constant": constant,
    "prim::GetAttr": get_attr,
    "prim::SetAttr": set_attr,
    "prim::ListConstruct": construct_list,
    "prim::TupleConstruct": construct_tuple,
    "prim::DictConstruct": construct_dict,
    "prim::ListUnpack": unpack,
    "prim::TupleUnpack": unpack,
    "prim::TupleIndex": tuple_index,
    "prim::unchecked_cast": passthrough,
    "prim::unchecked_unwrap_optional": passthrough,
    "prim::AutogradZero": bind_none,
    "prim::Uninitialized": bind_none,
    # ``with torch.no_grad():`` in scripted code: the graph has no autograd state.
    "prim::Enter": bind_none,
    "prim::Exit": bind_none,
    "prim::Print": ignore,
    "prim::isinstance": is_instance,
    "prim::dtype": tensor_property,
    "prim::device": tensor_property,
    "prim::layout": tensor_property,
    "prim::is_cuda": tensor_property,
    "prim::requires_grad": bind_none,
    "aten::dim": tensor_property,
    "aten::size": tensor_property,
    "aten::numel": tensor_property,
    "prim::shape": tensor_property,
    "aten::__is__": identity_test,
    "aten::__isnot__": identity_test,
}


def own(value: Any) -> Any:
    """A copy of a constant tensor, so running the graph never changes the model's."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, list):
        return [own(item) for item in value]
    if isinstance(value, tuple):
        return tuple(own(item) for item in value)
    return value


_TYPE_CHECKS: Final[dict[str, Callable[[Any], bool]]] = {
    "Tensor": lambda v: isinstance(v, torch.Tensor),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, float),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "NoneType": lambda v: v is None,
}


def _matches(value: Any, type_name: str) -> bool:
    check = _TYPE_CHECKS.get(type_name.split("(")[0].split("[")[0])
    if check is not None:
        return check(value)
    for prefix, kind in (("List", list), ("Tuple", tuple), ("Dict", dict)):
        if type_name.startswith((prefix, prefix.lower())):
            return isinstance(value, kind)
    return False
