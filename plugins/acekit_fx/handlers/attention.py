"""Attention as first-class ops: ``multihead_attention`` and ``scaled_dot_product_attention``.

Both must stay whole through parsing so that a quantizer and an exporter see them as
one op (a target may have a fused kernel for them).
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import nn

from acekit.ir import Value
from acekit_fx.context import NodeContext, Unsupported
from acekit_fx.handlers.registry import function, lowers, module


@module(nn.MultiheadAttention)
def convert_multihead_attention(
    cx: NodeContext,
    mod: nn.MultiheadAttention,
    query: Any,
    key: Any,
    value: Any,
    key_padding_mask: Any = None,
    need_weights: Any = True,
    attn_mask: Any = None,
    average_attn_weights: Any = True,
    is_causal: Any = False,
) -> tuple[Any, ...]:
    """``nn.MultiheadAttention``: one node with outputs (attn_output, attn_weights)."""
    if not mod._qkv_same_embed_dim:
        raise Unsupported("MultiheadAttention with kdim/vdim different from embed_dim")
    if mod.bias_k is not None or mod.add_zero_attn:
        raise Unsupported("MultiheadAttention with add_bias_kv or add_zero_attn")
    path = str(cx.fx_node.target)
    in_w = cx.module_tensor(mod, path, "in_proj_weight")
    in_b = cx.module_tensor(mod, path, "in_proj_bias")
    out_w = cx.module_tensor(mod.out_proj, f"{path}.out_proj", "weight")
    out_b = cx.module_tensor(mod.out_proj, f"{path}.out_proj", "bias")
    assert in_w is not None and out_w is not None
    attrs = {
        "num_heads": mod.num_heads,
        "dropout": float(mod.dropout),
        "batch_first": bool(mod.batch_first),
        "need_weights": bool(cx.static(need_weights, "need_weights")),
        "average_attn_weights": bool(cx.static(average_attn_weights, "average_attn_weights")),
        "is_causal": bool(cx.static(is_causal, "is_causal")),
    }
    return _mha_node(
        cx, query, key, value, in_w, in_b, out_w, out_b, key_padding_mask, attn_mask, attrs
    )


@function(F.multi_head_attention_forward)
def convert_multi_head_attention_forward(
    cx: NodeContext,
    query: Any,
    key: Any,
    value: Any,
    embed_dim_to_check: Any,
    num_heads: Any,
    in_proj_weight: Any,
    in_proj_bias: Any,
    bias_k: Any,
    bias_v: Any,
    add_zero_attn: Any,
    dropout_p: Any,
    out_proj_weight: Any,
    out_proj_bias: Any,
    training: Any = True,
    key_padding_mask: Any = None,
    need_weights: Any = True,
    attn_mask: Any = None,
    use_separate_proj_weight: Any = False,
    q_proj_weight: Any = None,
    k_proj_weight: Any = None,
    v_proj_weight: Any = None,
    static_k: Any = None,
    static_v: Any = None,
    average_attn_weights: Any = True,
    is_causal: Any = False,
) -> tuple[Any, ...]:
    """``F.multi_head_attention_forward`` (what dynamo records for nn.MultiheadAttention)."""
    if cx.static(use_separate_proj_weight, "use_separate_proj_weight"):
        raise Unsupported("multi-head attention with separate q/k/v projection weights")
    if bias_k is not None or bias_v is not None or cx.static(add_zero_attn, "add_zero_attn"):
        raise Unsupported("multi-head attention with bias_k/bias_v or add_zero_attn")
    if static_k is not None or static_v is not None:
        raise Unsupported("multi-head attention with static_k/static_v")
    attrs = {
        "num_heads": int(cx.static(num_heads, "num_heads")),
        "dropout": float(cx.static(dropout_p, "dropout_p")),
        "batch_first": False,
        "need_weights": bool(cx.static(need_weights, "need_weights")),
        "average_attn_weights": bool(cx.static(average_attn_weights, "average_attn_weights")),
        "is_causal": bool(cx.static(is_causal, "is_causal")),
    }
    return _mha_node(
        cx,
        query,
        key,
        value,
        cx.value(in_proj_weight),
        cx.optional(in_proj_bias),
        cx.value(out_proj_weight),
        cx.optional(out_proj_bias),
        key_padding_mask,
        attn_mask,
        attrs,
    )


def _mha_node(
    cx: NodeContext,
    query: Any,
    key: Any,
    value: Any,
    in_w: Value,
    in_b: Value | None,
    out_w: Value,
    out_b: Value | None,
    key_padding_mask: Any,
    attn_mask: Any,
    attrs: dict[str, Any],
) -> tuple[Any, ...]:
    inputs = [
        cx.value(query),
        cx.value(key),
        cx.value(value),
        in_w,
        cx.none() if in_b is None else in_b,
        out_w,
        cx.none() if out_b is None else out_b,
    ]
    if attn_mask is not None:
        inputs += [
            cx.none() if key_padding_mask is None else cx.value(key_padding_mask),
            cx.value(attn_mask),
        ]
    elif key_padding_mask is not None:
        inputs.append(cx.value(key_padding_mask))
    node = cx.emit("multihead_attention", inputs, attrs, num_outputs=2)
    output, weights = node.outputs
    # Without need_weights the second result is None at run time: readers get None.
    return (output, None if cx.result[1] is None else weights)


@lowers("scaled_dot_product_attention")
def convert_scaled_dot_product_attention(
    cx: NodeContext,
    query: Any,
    key: Any,
    value: Any,
    attn_mask: Any = None,
    dropout_p: Any = 0.0,
    is_causal: Any = False,
    scale: Any = None,
    enable_gqa: Any = False,
) -> Value:
    """``F.scaled_dot_product_attention``."""
    inputs = [cx.value(query), cx.value(key), cx.value(value)]
    if attn_mask is not None:
        inputs.append(cx.value(attn_mask))
    factor = cx.static(scale, "scale")
    attrs = {
        "dropout_p": float(cx.static(dropout_p, "dropout_p")),
        "is_causal": bool(cx.static(is_causal, "is_causal")),
        "scale": None if factor is None else float(factor),
        "enable_gqa": bool(cx.static(enable_gqa, "enable_gqa")),
    }
    return cx.out("scaled_dot_product_attention", inputs, attrs)
