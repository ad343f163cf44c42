"""Hugging Face architectures built from tiny configs (random weights, nothing downloaded)."""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch
from torch import nn

from tests.zoo.harness import Case

VOCAB = 100
#: Sequence lengths: the example's and the other one ORT must also run at.
SEQ, OTHER_SEQ = 12, 16
IMAGE = 32

_TEXT = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=64,
)
_DECODER = dict(_TEXT, num_key_value_heads=2, use_cache=False)
_VISION = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    image_size=IMAGE,
    patch_size=8,
)

#: Architecture -> (config class, model class, config kwargs, kind).
ARCHITECTURES: dict[str, tuple[str, str, dict[str, Any], str]] = {
    "bert": ("BertConfig", "BertModel", _TEXT, "text"),
    "roberta": ("RobertaConfig", "RobertaModel", _TEXT, "text"),
    "distilbert": (
        "DistilBertConfig",
        "DistilBertModel",
        dict(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=64),
        "text",
    ),
    "albert": ("AlbertConfig", "AlbertModel", dict(_TEXT, embedding_size=16), "text"),
    "electra": ("ElectraConfig", "ElectraModel", dict(_TEXT, embedding_size=16), "text"),
    "deberta-v2": ("DebertaV2Config", "DebertaV2Model", _TEXT, "text"),
    "mobilebert": (
        "MobileBertConfig",
        "MobileBertModel",
        dict(_TEXT, embedding_size=16, intra_bottleneck_size=16, true_hidden_size=16),
        "text",
    ),
    "xlm-roberta": ("XLMRobertaConfig", "XLMRobertaModel", _TEXT, "text"),
    "mpnet": ("MPNetConfig", "MPNetModel", _TEXT, "text"),
    "t5-encoder": (
        "T5Config",
        "T5EncoderModel",
        dict(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4),
        "text",
    ),
    "clip-text": ("CLIPTextConfig", "CLIPTextModel", _TEXT, "text"),
    "gpt2": (
        "GPT2Config",
        "GPT2Model",
        dict(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, use_cache=False),
        "text",
    ),
    "llama": ("LlamaConfig", "LlamaModel", _DECODER, "text"),
    "mistral": ("MistralConfig", "MistralModel", _DECODER, "text"),
    "qwen2": ("Qwen2Config", "Qwen2Model", _DECODER, "text"),
    "phi": ("PhiConfig", "PhiModel", _DECODER, "text"),
    "gemma": ("GemmaConfig", "GemmaModel", dict(_DECODER, head_dim=8), "text"),
    "opt": (
        "OPTConfig",
        "OPTModel",
        dict(
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            ffn_dim=64,
            max_position_embeddings=64,
            word_embed_proj_dim=32,
            use_cache=False,
        ),
        "text",
    ),
    "vit": ("ViTConfig", "ViTModel", _VISION, "image"),
    "deit": ("DeiTConfig", "DeiTModel", _VISION, "image"),
    "dinov2": ("Dinov2Config", "Dinov2Model", _VISION, "image"),
    "clip-vision": ("CLIPVisionConfig", "CLIPVisionModel", _VISION, "image"),
    "swin": (
        "SwinConfig",
        "SwinModel",
        dict(
            image_size=IMAGE,
            patch_size=4,
            embed_dim=16,
            depths=[1, 1],
            num_heads=[2, 2],
            window_size=4,
        ),
        "image",
    ),
    "convnext": (
        "ConvNextConfig",
        "ConvNextModel",
        dict(num_channels=3, hidden_sizes=[16, 32], depths=[1, 1], num_stages=2),
        "image",
    ),
}


class TextModel(nn.Module):
    """Calls a text model with keywords: ``forward(input_ids, attention_mask)``.

    Decoders in transformers 5 take a cache second; users call them by keyword too.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        """The model's output for ``input_ids`` with ``attention_mask``."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask)


class MeanPooling(nn.Module):
    """sentence-transformers' mean pooling over a BERT encoder (masked mean of tokens)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The mean of the unmasked token embeddings."""
        tokens = self.model(input_ids, attention_mask)[0]
        mask = attention_mask.unsqueeze(-1).expand_as(tokens).float()
        return (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def _build(arch: str) -> nn.Module:
    import transformers

    config_cls, model_cls, kwargs, kind = ARCHITECTURES[arch]
    config = getattr(transformers, config_cls)(**kwargs)
    model = getattr(transformers, model_cls)(config).eval()
    if kind != "text":
        return model
    params = list(inspect.signature(model.forward).parameters)
    return model if params[:2] == ["input_ids", "attention_mask"] else TextModel(model)


def text_inputs(batch: int, variant: int) -> tuple[torch.Tensor, ...]:
    """Token ids and an attention mask whose last row is padded."""
    length = OTHER_SEQ if variant else SEQ
    generator = torch.Generator().manual_seed(batch * 100 + length)
    ids = torch.randint(1, VOCAB, (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[-1, length - 3 :] = 0
    return ids, mask


def image_inputs(batch: int, variant: int) -> tuple[torch.Tensor, ...]:
    """Pixel values at the config's image size."""
    return (torch.randn(batch, 3, IMAGE, IMAGE),)


def cases() -> list[Case]:
    """Every architecture, plus mean pooling over BERT (sentence-transformers)."""
    result = [
        Case(
            "huggingface",
            arch,
            functools.partial(_build, arch),
            text_inputs if kind == "text" else image_inputs,
            text=kind == "text",
        )
        for arch, (_, _, _, kind) in ARCHITECTURES.items()
    ]
    result.append(
        Case(
            "huggingface",
            "bert-mean-pooling",
            lambda: MeanPooling(_build("bert")),
            text_inputs,
            text=True,
        )
    )
    return result
