"""Per-rank work of the distributed QAT tests (importable by spawned processes)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist

SHAPE = (2, 3, 32, 32)


def train_on_rank(rank: int, world: int, port: int, sharding: bool, out_dir: str) -> None:
    """Compile, calibrate on this rank's data, train 3 steps; rank 0 records agreement."""
    import acekit
    from acekit.settings import (
        DistributedSettings,
        GlobalQuantizationSettings,
        Settings,
        TrainingSettings,
    )
    from tests.quant_support import SmallCNN, trained_like

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = trained_like(SmallCNN(), SHAPE, seed=0)
        generator = torch.Generator().manual_seed(100 + rank)  # each rank its own data
        data = [torch.randn(*SHAPE, generator=generator) for _ in range(3)]
        settings = Settings(
            training=TrainingSettings(stats_steps=3),
            quantization=GlobalQuantizationSettings(quantization_algorithm="qat"),
            distributed=DistributedSettings(multi_gpu=True, use_sharding=sharding),
        )
        qm = acekit.compile(
            model,
            settings=settings,
            example_inputs=(data[0],),
            calibration_inputs=data,
            logs_dir=str(Path(out_dir) / f"logs{rank}"),
        )
        calibrated = _flat_specs(qm)
        qm.train()
        optimizer = torch.optim.SGD(qm.parameters(), lr=0.05)
        for _ in range(3):
            x = torch.randn(*SHAPE, generator=generator)
            loss = qm(x).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        graph = qm.sync_graph()  # gathers shards: every rank calls it
        trained = torch.cat(
            [graph.tensors[ref].flatten().float() for ref in sorted(graph.tensors)]
            + [_flat_specs(qm)]
        )
        result = {}
        for name, local in (("calibrated", calibrated), ("trained", trained)):
            gathered = [torch.zeros_like(local) for _ in range(world)]
            dist.all_gather(gathered, local)
            result[name] = all(torch.equal(gathered[0], other) for other in gathered[1:])
        result["changed"] = not torch.equal(calibrated, _flat_specs(qm))
        qm.export(Path(out_dir) / "model.onnx")  # every rank: shards are gathered
        if rank == 0:
            torch.save(result, Path(out_dir) / "result.pt")
    finally:
        dist.destroy_process_group()


def _flat_specs(qm: torch.nn.Module) -> torch.Tensor:
    """Every quantizer's scale and zero point of ``qm``'s graph, as one vector."""
    graph = qm.sync_graph()  # type: ignore[operator]
    values = []
    for node in graph.nodes:
        for value in node.outputs:
            spec = value.quant
            if spec is not None and spec.scale is not None:
                values += [*spec.scale, *map(float, spec.zero_point or ())]
    return torch.tensor(values, dtype=torch.float64)
