"""Quantization-aware training: the QuantizedModule trains, checkpoints and distributes."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch.nn import functional as F

import acekit
from acekit.runtime.distributed import DistributedSetupError
from acekit.runtime.quantized import CheckpointMismatchError, QuantizedModule
from acekit.settings import (
    DistributedSettings,
    GlobalQuantizationSettings,
    Settings,
    TrainingSettings,
)
from tests.qat_workers import train_on_rank
from tests.quant_support import SmallCNN, trained_like

SHAPE = (2, 3, 32, 32)
QAT = Settings(
    training=TrainingSettings(stats_steps=3),
    quantization=GlobalQuantizationSettings(quantization_algorithm="qat", weights_num_bits=4),
)


def _compile(
    settings: Settings, tmp_path: Path, seed: int = 0
) -> tuple[torch.nn.Module, QuantizedModule]:
    model = trained_like(SmallCNN(), SHAPE, seed=seed)
    generator = torch.Generator().manual_seed(1)
    data = [torch.randn(*SHAPE, generator=generator) for _ in range(3)]
    qm = acekit.compile(
        model,
        settings=settings,
        example_inputs=(data[0],),
        calibration_inputs=data,
        logs_dir=str(tmp_path / "logs"),
    )
    return model, qm


def _step(
    qm: QuantizedModule, teacher: torch.nn.Module, optimizer: torch.optim.Optimizer, seed: int
) -> float:
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        target = teacher(x)
    loss = F.mse_loss(qm(x), target)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _scales(qm: QuantizedModule) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in qm.state_dict().items() if k.endswith(".scale")}


def test_qat_learns_scales_and_weights_in_an_ordinary_loop(tmp_path: Path) -> None:
    teacher, qm = _compile(QAT, tmp_path)
    qm.train()
    before = _scales(qm)
    optimizer = torch.optim.SGD(qm.parameters(), lr=0.02, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)
    losses = []
    for step in range(16):
        x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(step))
        with torch.no_grad():
            target = teacher(x)
        # bfloat16 autocast on CPU every other step, and gradients accumulated over two.
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=step % 2 == 0):
            out = qm(x)
        loss = F.mse_loss(out.float(), target) / 2
        loss.backward()
        if step % 2 == 1:
            torch.nn.utils.clip_grad_norm_(qm.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            scheduler.step()
        losses.append(float(loss.detach()))
    after = _scales(qm)
    assert any(not torch.equal(before[k], after[k]) for k in before), "no scale learned"
    assert sum(losses[-4:]) < sum(losses[:4])
    qm.eval()
    with torch.no_grad():
        evaluated = qm(torch.randn(*SHAPE))
    assert torch.isfinite(evaluated).all() and not evaluated.requires_grad


def test_ptq_module_trains_weights_with_fixed_scales(tmp_path: Path) -> None:
    teacher, qm = _compile(Settings(training=TrainingSettings(stats_steps=3)), tmp_path)
    qm.train()
    scales = _scales(qm)
    weight = qm.graph_module.get_parameter("conv1.weight").detach().clone()
    optimizer = torch.optim.SGD(qm.parameters(), lr=0.05)
    _step(qm, teacher, optimizer, 0)
    assert not torch.equal(weight, qm.graph_module.get_parameter("conv1.weight"))
    assert all(torch.equal(scales[k], v) for k, v in _scales(qm).items())
    log = next((tmp_path / "logs").glob("*.log"))
    assert log.exists()


def test_state_dict_resumes_training_exactly(tmp_path: Path) -> None:
    teacher, qm = _compile(QAT, tmp_path)
    qm.train()
    optimizer = torch.optim.SGD(qm.parameters(), lr=0.02, momentum=0.9)
    for step in range(2):
        _step(qm, teacher, optimizer, step)
    checkpoint = {"model": qm.state_dict(), "optimizer": optimizer.state_dict()}
    torch.save(checkpoint, tmp_path / "ckpt.pt")
    expected = _step(qm, teacher, optimizer, 99)

    _, resumed = _compile(QAT, tmp_path)
    resumed.train()
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    resumed.load_state_dict(state["model"])
    resumed_optimizer = torch.optim.SGD(resumed.parameters(), lr=0.02, momentum=0.9)
    resumed_optimizer.load_state_dict(state["optimizer"])
    assert _step(resumed, teacher, resumed_optimizer, 99) == pytest.approx(expected, rel=1e-6)


def test_save_and_load_resume_training_exactly(tmp_path: Path) -> None:
    teacher, qm = _compile(QAT, tmp_path)
    qm.train()
    optimizer = torch.optim.SGD(qm.parameters(), lr=0.02)
    _step(qm, teacher, optimizer, 0)
    path = qm.save(tmp_path / "run.acekit")
    expected = _step(qm, teacher, optimizer, 1)
    loaded = acekit.load(path)
    assert loaded.training and loaded.learnable_scales
    again = _step(loaded, teacher, torch.optim.SGD(loaded.parameters(), lr=0.02), 1)
    assert again == pytest.approx(expected, rel=1e-6)


def test_a_crash_while_saving_keeps_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, qm = _compile(QAT, tmp_path)
    path = qm.save(tmp_path / "run.acekit")
    good = path.read_bytes()

    def crash(obj: object, f: object, *args: object, **kwargs: object) -> None:
        Path(str(f)).write_bytes(good[: len(good) // 2])  # half a file, then the crash
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        qm.save(path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".run")] == []


def test_a_checkpoint_of_other_settings_is_refused_whole(tmp_path: Path) -> None:
    _, qm = _compile(QAT, tmp_path)
    other_settings = Settings(
        training=TrainingSettings(stats_steps=3),
        quantization=GlobalQuantizationSettings(quantization_algorithm="qat", weights_num_bits=8),
    )
    _, other = _compile(other_settings, tmp_path, seed=5)
    before = {k: v.clone() for k, v in qm.state_dict().items() if isinstance(v, torch.Tensor)}
    with pytest.raises(CheckpointMismatchError, match=r"settings \[quantization\] differ"):
        qm.load_state_dict(other.state_dict())
    after = qm.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    state = dict(qm.state_dict())
    state.pop("graph_module.conv1.weight")
    with pytest.raises(CheckpointMismatchError, match="missing tensor 'graph_module.conv1.weight'"):
        qm.load_state_dict(state)


def test_multi_gpu_without_a_launcher_says_how_to_launch(tmp_path: Path) -> None:
    settings = Settings(distributed=DistributedSettings(multi_gpu=True))
    with pytest.raises(DistributedSetupError, match="torchrun --nproc_per_node"):
        _compile(settings, tmp_path)


def test_qat_through_the_clika_backend(tmp_path: Path) -> None:
    teacher = trained_like(SmallCNN(), SHAPE)
    data = [torch.randn(*SHAPE) for _ in range(3)]
    compiled = torch.compile(
        teacher,
        backend="clika",
        options={"settings": QAT, "calibration_inputs": data, "logs_dir": str(tmp_path)},
    )
    with torch.no_grad():
        compiled(data[0])  # the first call quantizes
    qm = compiled.quantized_module()
    qm.train()
    before = _scales(qm)
    optimizer = torch.optim.SGD(qm.parameters(), lr=0.05)
    x = torch.randn(*SHAPE)
    loss = F.mse_loss(compiled(x), teacher(x).detach())
    loss.backward()
    optimizer.step()
    assert any(not torch.equal(before[k], v) for k, v in _scales(qm).items())


@pytest.mark.parametrize("sharding", [False, True], ids=["ddp", "fsdp"])
def test_two_processes_end_with_the_same_model(tmp_path: Path, sharding: bool) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(train_on_rank, args=(2, port, sharding, str(tmp_path)), nprocs=2, join=True)
    result = torch.load(tmp_path / "result.pt", weights_only=True)
    assert result == {"calibrated": True, "trained": True, "changed": True}
    assert (tmp_path / "model.onnx").stat().st_size > 0


def test_the_deployed_model_equals_the_trained_simulation(tmp_path: Path) -> None:
    from acekit_onnxruntime.session import OrtRunner

    teacher, qm = _compile(QAT, tmp_path)
    qm.train()
    optimizer = torch.optim.SGD(qm.parameters(), lr=0.05)
    for step in range(4):
        _step(qm, teacher, optimizer, step)
    qm.eval()
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        simulated = qm(x)
    deployed = OrtRunner(qm.export(tmp_path / "trained.onnx"))(x)[0]
    # Folding BatchNorm puts the deployed bias on the int32 grid, which the simulation's
    # BatchNorm does not: they may differ by a rounding step here and there.
    step = float(simulated.max() - simulated.min()) / 255
    assert float((simulated - deployed).abs().max()) <= 2 * step


def test_batchnorm_trains_then_freezes_and_deploys_folded(tmp_path: Path) -> None:
    from acekit_onnxruntime.session import OrtRunner
    from tests.quant_support import op_counts

    model = trained_like(SmallCNN(), SHAPE)
    data = [torch.randn(*SHAPE) for _ in range(3)]
    qm = acekit.compile(
        model,
        settings=QAT,
        example_inputs=(data[0],),
        calibration_inputs=data,
        pipeline="qat-bn{freeze_after=2},cleanup,ptq",
        logs_dir=str(tmp_path / "logs"),
    )
    assert [n.op for n in qm.graph.nodes if "batch_norm" in n.op] == ["qat_batch_norm"]
    qm.train()
    optimizer = torch.optim.SGD(qm.parameters(), lr=0.01)
    means = []
    for step in range(4):
        _step(qm, model, optimizer, step)
        means.append(qm.state_dict()["graph_module.stem.1.running_mean"].clone())
    assert not torch.equal(means[0], means[1]), "statistics did not learn"
    assert torch.equal(means[1], means[2]) and torch.equal(means[2], means[3]), "not frozen"
    assert int(qm.state_dict()["graph_module.stem.1.qat_steps"]) == 2
    qm.eval()
    x = torch.randn(*SHAPE)
    optimized = tmp_path / "optimized.onnx"
    deployed = OrtRunner(qm.export(tmp_path / "model.onnx"), optimized_path=optimized)(x)[0]
    counts = op_counts(optimized)
    assert counts["QLinearConv"] == 3 and not counts["BatchNormalization"], counts
    with torch.no_grad():
        simulated = qm(x)
    # The deployed bias sits on the int32 grid the simulation leaves it off.
    step = float(simulated.max() - simulated.min()) / 255
    assert float((simulated - deployed).abs().max()) <= 2 * step
