"""Leaf modules: modules converted as one IR op instead of by following their code.

``nn.MultiheadAttention`` is one ``multihead_attention`` node in the IR (as the fx
parser keeps it), so quantizers and targets see the attention block whole.
A scripted module's ``forward`` keeps its full signature, so the call's arguments are
known by name; a traced one keeps only the tensors it used, and is followed into its
code instead (its ``_native_multi_head_attention`` fast path converts to the same op).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import torch

from acekit.runtime import get_kernel
from acekit_torchscript.context import Site
from acekit_torchscript.entries import ModuleEntry, TensorEntry, example_of, is_static, resolve
from acekit_torchscript.jit import find_nodes, module_attr, module_has_attr

if TYPE_CHECKING:
    from acekit_torchscript.walker import Walker

_MHA_ARGUMENTS: Final = ("query", "key", "value")


def _tensor_attribute(walker: Walker, module: ModuleEntry, *names: str) -> TensorEntry | None:
    owner = module.module
    for name in names[:-1]:
        owner = module_attr(owner, name)
    tensor = module_attr(owner, names[-1])
    if tensor is None:
        return None
    path = (*module.path, *names)
    key = ".".join(path)
    trainable = key in walker.state.parameters and bool(tensor.requires_grad)
    return walker.builder.parameter(path, tensor, trainable=trainable, scope=module.scope)


def multihead_attention(
    walker: Walker, module: ModuleEntry, site: Site, args: list[Any]
) -> Any | None:
    """``nn.MultiheadAttention.forward`` as a ``multihead_attention`` node, or ``None``
    when the call or the module uses a feature the IR op does not have."""
    method = module.module._get_method("forward")
    names = [argument.name for argument in method.schema.arguments[1:]]
    if tuple(names[:3]) != _MHA_ARGUMENTS:
        return _traced_multihead_attention(walker, module, site, args, method)
    if len(names) != len(args):
        return None
    bound = dict(zip(names, (resolve(a) for a in args), strict=True))
    options = {k: v for k, v in bound.items() if k not in ("query", "key", "value")}
    if any(
        not is_static(v) for k, v in options.items() if k not in ("key_padding_mask", "attn_mask")
    ):
        return None
    owner = module.module
    if (
        not module_attr(owner, "_qkv_same_embed_dim")
        or module_attr(owner, "bias_k") is not None
        or module_attr(owner, "add_zero_attn")
    ):
        return None
    need_weights = bool(bound.get("need_weights", True))
    average = bool(bound.get("average_attn_weights", True))
    own_site = Site(site.node, module.scope, (*site.call_sites, site.node))
    builder = walker.builder

    inputs: list[Any] = [
        bound["query"],
        bound["key"],
        bound["value"],
        _tensor_attribute(walker, module, "in_proj_weight"),
        _tensor_attribute(walker, module, "in_proj_bias"),
        _tensor_attribute(walker, module, "out_proj", "weight"),
        _tensor_attribute(walker, module, "out_proj", "bias"),
        bound.get("key_padding_mask"),
        bound.get("attn_mask"),
    ]
    while inputs[-1] is None:
        inputs.pop()
    values = [builder.value(entry, own_site) for entry in inputs]
    attrs: dict[str, Any] = {
        "num_heads": int(module_attr(owner, "num_heads")),
        "dropout": float(module_attr(owner, "dropout")),
        "batch_first": bool(module_attr(owner, "batch_first")),
        "need_weights": need_weights,
        "average_attn_weights": average,
    }
    if bound.get("is_causal", False):
        attrs["is_causal"] = True
    # The example results come from the runtime's kernel, which the generated module
    # will run: calling the scripted method itself may take its fast path, which
    # TorchScript cannot always run outside the model.
    kernel = get_kernel("multihead_attention")
    examples = [None if v is None else example_of(v) for v in inputs]
    with torch.no_grad():
        results = kernel.fn(*examples, **attrs, training=bool(module_attr(owner, "training")))
    output, weights = builder.emit(
        "multihead_attention",
        values,
        attrs,
        own_site,
        [results[0], results[1]],
        name="_".join(module.path) or None,
    )
    return (output, weights if need_weights else None)


def _int_constants(graph: torch._C.Graph) -> set[int]:
    found: set[int] = set()
    for node in find_nodes(graph, "prim::Constant"):
        value = node.output().toIValue() if node.outputsSize() == 1 else None
        if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point():
            value = int(value.item())
        if isinstance(value, int) and not isinstance(value, bool):
            found.add(value)
    return found


def _transposes_input(graph: torch._C.Graph) -> bool:
    inputs = {value.unique() for value in list(graph.inputs())[1:]}
    for node in find_nodes(graph, "aten::transpose"):
        if node.inputsAt(0).unique() not in inputs:
            continue
        dims = {node.inputsAt(1).toIValue(), node.inputsAt(2).toIValue()}
        if dims == {0, 1}:
            return True
    return False


def _traced_multihead_attention(
    walker: Walker,
    module: ModuleEntry,
    site: Site,
    args: list[Any],
    method: torch._C.ScriptMethod,
) -> Any | None:
    """A traced ``nn.MultiheadAttention`` as one node, when its settings can be found.

    A traced module keeps neither its Python attributes nor its call's arguments: only
    the tensors it read (``attn(x, kv, kv)`` is called with two) and the code the
    trace recorded. The settings are read from that code (``batch_first`` transposes
    the inputs first, ``num_heads`` is one of its integer constants) and every guess
    is checked against the traced code's own result on the example inputs; without a
    match the call is converted op by op instead.
    """
    graph = method.graph
    if find_nodes(graph, "aten::_native_multi_head_attention"):
        return None  # the fast path converts to the same op with its exact settings
    tensors = [resolve(a) for a in args]
    if not 1 <= len(tensors) <= 3 or not all(isinstance(t, TensorEntry) for t in tensors):
        return None
    query, key, value = {1: (0, 0, 0), 2: (0, 1, 1), 3: (0, 1, 2)}[len(tensors)]
    returns = list(method.schema.returns)
    need_weights = len(returns) == 1 and str(returns[0].type).startswith("Tuple")
    weight_entries = [
        _tensor_attribute(walker, module, "in_proj_weight"),
        _tensor_attribute(walker, module, "in_proj_bias"),
        _tensor_attribute(walker, module, "out_proj", "weight"),
        _tensor_attribute(walker, module, "out_proj", "bias"),
    ]
    if weight_entries[0] is None or weight_entries[2] is None:
        return None
    embed_dim = int(weight_entries[0].example.shape[1])
    if not all(
        t.example.is_floating_point()
        and t.example.dim() in (2, 3)
        and t.example.shape[-1] == embed_dim
        for t in tensors
    ):
        return None  # masks were passed too: which tensor is which cannot be told
    examples = [tensors[query].example, tensors[key].example, tensors[value].example]
    weights = [None if w is None else w.example for w in weight_entries]
    with torch.no_grad():
        expected = method(*(t.example for t in tensors))
    if need_weights and (not isinstance(expected, tuple) or len(expected) != 2):
        return None
    expected_output = expected[0] if need_weights else expected
    attrs: dict[str, Any] = {
        "batch_first": _transposes_input(graph),
        "need_weights": need_weights,
    }
    if need_weights:
        attrs["average_attn_weights"] = expected[1].dim() == 3
    kernel = get_kernel("multihead_attention")
    for heads in sorted(c for c in _int_constants(graph) if c > 0 and embed_dim % c == 0):
        try:
            with torch.no_grad():
                output, attention = kernel.fn(*examples, *weights, num_heads=heads, **attrs)
        except (RuntimeError, AssertionError, ValueError):
            continue  # a wrong guess can make shapes disagree
        if not torch.allclose(output, expected_output, rtol=1e-4, atol=1e-5):
            continue
        if need_weights and not torch.allclose(attention, expected[1], rtol=1e-4, atol=1e-5):
            continue
        own_site = Site(site.node, module.scope, (*site.call_sites, site.node))
        inputs = [tensors[query], tensors[key], tensors[value], *weight_entries]
        results = walker.builder.emit(
            "multihead_attention",
            [walker.builder.value(entry, own_site) for entry in inputs],
            {"num_heads": heads, **attrs},
            own_site,
            [output, attention],
            name="_".join(module.path) or None,
        )
        return tuple(results) if need_weights else results[0]
    return None


def stochastic_depth(
    walker: Walker, module: ModuleEntry, site: Site, args: list[Any]
) -> Any | None:
    """torchvision's ``StochasticDepth`` as a ``stochastic_depth`` node (a scripted one:
    a traced module lost ``p`` and ``mode`` and, in evaluation, recorded no op at all)."""
    owner = module.module
    if len(args) != 1 or not module_has_attr(owner, "p") or not module_has_attr(owner, "mode"):
        return None
    entry = resolve(args[0])
    if not isinstance(entry, TensorEntry):
        return None
    own_site = Site(site.node, module.scope, (*site.call_sites, site.node))
    training = bool(module_attr(owner, "training"))
    kernel = get_kernel("stochastic_depth")
    attrs = {"p": float(module_attr(owner, "p")), "mode": str(module_attr(owner, "mode"))}
    with torch.no_grad():
        result = kernel.fn(entry.example, **attrs, training=training)
    name = "_".join(module.path) or None
    return walker.builder.emit(
        "stochastic_depth", [entry.value], attrs, own_site, [result], name=name
    )[0]


LeafConverter = Callable[["Walker", ModuleEntry, Site, list[Any]], Any]

#: Leaf module converters by TorchScript class name (mangling removed).
LEAF_MODULES: Final[Mapping[str, LeafConverter]] = {
    "__torch__.torch.nn.modules.activation.MultiheadAttention": multihead_attention,
    "__torch__.torchvision.ops.stochastic_depth.StochasticDepth": stochastic_depth,
}
