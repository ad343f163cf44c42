"""Attention."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from acekit.ops.opdef import OpDef
from acekit.ops.schemas import (
    BOOL,
    FLOAT,
    AttrSpec,
    OpSchema,
)


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    *,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> Tensor:
    """``F.scaled_dot_product_attention``."""
    return F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask,
        dropout_p=dropout_p,
        is_causal=is_causal,
        scale=scale,
        enable_gqa=enable_gqa,
    )


def multihead_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    in_proj_weight: Tensor,
    in_proj_bias: Tensor | None,
    out_proj_weight: Tensor,
    out_proj_bias: Tensor | None,
    key_padding_mask: Tensor | None = None,
    attn_mask: Tensor | None = None,
    *,
    num_heads: int,
    dropout: float = 0.0,
    batch_first: bool = False,
    need_weights: bool = True,
    average_attn_weights: bool = True,
    is_causal: bool = False,
    training: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """nn.MultiheadAttention's forward (same embed dim for query, key and value)."""
    batched = query.dim() == 3
    if batch_first and batched:
        # Keep identities: nn.MultiheadAttention takes its self-attention path on them.
        if key is value:
            if query is key:
                query = key = value = query.transpose(1, 0)
            else:
                query, key = (t.transpose(1, 0) for t in (query, key))
                value = key
        else:
            query, key, value = (t.transpose(1, 0) for t in (query, key, value))
    output, weights = F.multi_head_attention_forward(
        query,
        key,
        value,
        query.shape[-1],
        num_heads,
        in_proj_weight,
        in_proj_bias,
        None,
        None,
        False,
        dropout,
        out_proj_weight,
        out_proj_bias,
        training=training,
        key_padding_mask=key_padding_mask,
        need_weights=need_weights,
        attn_mask=attn_mask,
        average_attn_weights=average_attn_weights,
        is_causal=is_causal,
    )
    if batch_first and batched:
        output = output.transpose(1, 0)
    return output, weights


DEFINITIONS = [
    OpDef(
        OpSchema(
            "scaled_dot_product_attention",
            ("query", "key", "value", "attn_mask"),
            {"dropout_p": FLOAT, "is_causal": BOOL, "scale": FLOAT, "enable_gqa": BOOL},
            optional_inputs=1,
        ),
        kernel=scaled_dot_product_attention,
        functions=(F.scaled_dot_product_attention,),
        aten=("scaled_dot_product_attention",),
    ),
    OpDef(
        OpSchema(
            "multihead_attention",
            (
                "query",
                "key",
                "value",
                "in_proj_weight",
                "in_proj_bias",
                "out_proj_weight",
                "out_proj_bias",
                "key_padding_mask",
                "attn_mask",
            ),
            {
                "num_heads": AttrSpec("int", required=True),
                "dropout": FLOAT,
                "batch_first": BOOL,
                "need_weights": BOOL,
                "average_attn_weights": BOOL,
                "is_causal": BOOL,
                "training": BOOL,
            },
            outputs=2,
            optional_inputs=2,
            doc="nn.MultiheadAttention (same q/k/v embed dim): outputs (attn_output, "
            "attn_weights); attn_weights is None at run time unless need_weights.",
        ),
        kernel=multihead_attention,
        uses_training=True,
    ),
]
