"""Every torchvision classifier (and a BERT encoder) parses, runs and matches the original.

(The whole job, compile to ORT, is tests/zoo/test_zoo.py.)

A handful of models run by default; the whole list runs with ``pytest -m slow``.
Inputs are as small as each architecture allows, so the sweep stays a CPU job.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from acekit.ir import Graph
from acekit_fx import FxParser
from tests.fx_support import assert_matches
from tests.zoo.torchvision_models import image_size, randomise

torchvision = pytest.importorskip("torchvision")

#: The default run: one model per family of ops (convs and BN, depthwise and SE, inverted
#: residuals, concatenation, attention, Swin's wrapped functions through torch.export).
FAST = {"resnet18", "mobilenet_v2", "vit_b_16", "squeezenet1_0", "densenet121", "swin_t"}

#: Models left out of the sweep, with the reason. None is at the moment.
EXCLUDED: dict[str, str] = {}

MODELS = torchvision.models.list_models(module=torchvision.models)


def build(name: str) -> tuple[nn.Module, torch.Tensor]:
    """The model with random weights, and an input as small as it accepts."""
    kwargs: dict[str, object] = {}
    size = image_size(name)
    if name.startswith("vit_"):
        kwargs["image_size"] = size
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # googlenet/inception warn about their init
        model = torchvision.models.get_model(name, **kwargs)
    return randomise(model).eval(), torch.randn(2, 3, size, size)


def check(model: nn.Module, x: torch.Tensor) -> Graph:
    graph = FxParser().parse(model, (x,))
    module = graph.to_module()
    with torch.no_grad():
        assert_matches(model(x), module(x))
    return graph


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            name,
            marks=[
                *([] if name in FAST else [pytest.mark.slow]),
                *([pytest.mark.skip(reason=EXCLUDED[name])] if name in EXCLUDED else []),
            ],
        )
        for name in MODELS
    ],
)
def test_torchvision_classifier(name: str) -> None:
    model, x = build(name)
    graph = check(model, x)
    assert graph.name == type(model).__name__


def test_fast_subset_is_in_the_zoo() -> None:
    assert set(MODELS) >= FAST


def test_bert_encoder_from_a_config() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    model = transformers.BertModel(config).eval()
    ids = torch.randint(0, 100, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 8:] = 0
    # symbolic_trace cannot take HF's BERT: the parser goes through torch.export.
    graph = FxParser().parse(model, (ids, mask))
    ops = {node.op for node in graph.nodes}
    assert {"embedding", "layer_norm", "linear", "scaled_dot_product_attention", "gelu"} <= ops
    assert {n.attrs["ref"] for n in graph.nodes if n.op == "parameter"} == set(model.state_dict())
    module = graph.to_module()
    with torch.no_grad():
        expected = model(ids, mask)
        actual = module(ids, mask)
    assert set(actual) == {"last_hidden_state", "pooler_output"}
    assert_matches(dict(expected), actual)
