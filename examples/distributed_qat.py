"""Quantization-aware training on several processes (DDP, or FSDP2 with --sharding).

Launch one process per device with torchrun; on a CPU-only machine gloo runs it::

    torchrun --standalone --nproc_per_node 2 examples/distributed_qat.py
    torchrun --standalone --nproc_per_node 2 examples/distributed_qat.py --sharding

Every rank compiles the same model; the calibration statistics of all ranks are
reduced, so every rank starts QAT with the same scales. With ``multi_gpu = True``
acekit wraps the module in DDP (``use_sharding = False``) or shards it with FSDP2's
``fully_shard`` (``use_sharding = True``). Each rank trains on its own shard of the
data; at the end every rank calls ``export`` (the shards are gathered) and rank 0
writes the ONNX model.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
import torch.distributed as dist
import torchvision
from torch.nn import functional as F

import acekit
from acekit.models import calibrate_batchnorm
from acekit.settings import (
    DistributedSettings,
    GlobalQuantizationSettings,
    Settings,
    TrainingSettings,
)

SHAPE = (8, 3, 64, 64)


def main() -> None:
    """Compile, fine-tune a few steps on this rank's data, export from rank 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sharding", action="store_true", help="FSDP2 instead of DDP")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", default="out/distributed_qat")
    args = parser.parse_args()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    rank = dist.get_rank()
    device = torch.device(
        f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if backend == "nccl" else "cpu"
    )
    try:
        torch.manual_seed(0)  # the same model on every rank
        model = calibrate_batchnorm(torchvision.models.resnet18(num_classes=10), SHAPE[1:])
        teacher = model.to(device)
        generator = torch.Generator().manual_seed(1000 + rank)  # each rank its own data
        data = [torch.randn(*SHAPE, generator=generator).to(device) for _ in range(4)]
        settings = Settings(
            training=TrainingSettings(stats_steps=4),
            quantization=GlobalQuantizationSettings(quantization_algorithm="qat"),
            distributed=DistributedSettings(multi_gpu=True, use_sharding=args.sharding),
        )
        out = Path(args.out)
        qm = acekit.compile(
            model,
            settings=settings,
            example_inputs=(data[0],),
            calibration_inputs=data,
            logs_dir=str(out / f"logs_rank{rank}"),
        )
        qm.train()
        optimizer = torch.optim.SGD(qm.parameters(), lr=1e-3, momentum=0.9)
        for step in range(args.steps):
            images = torch.randn(*SHAPE, generator=generator).to(device)
            with torch.no_grad():
                target = teacher(images)
            loss = F.mse_loss(qm(images), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if rank == 0:
                print(f"step {step}: distillation loss {float(loss):.5f}")
        qm.eval()
        written = qm.export(out / "resnet18_qat.onnx", overwrite=True)  # every rank
        if rank == 0:
            print(f"rank 0 wrote {written}")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
