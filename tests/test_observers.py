"""Streaming calibration observers (acekit_ptq.observers)."""

from __future__ import annotations

import math
import socket
from pathlib import Path

import pytest
import torch

from acekit_ptq import observers as obs
from acekit_ptq.observers import (
    OBSERVER_KINDS,
    Observer,
    all_reduce_observer,
    make_observer,
    qparams_from_range,
)

HISTOGRAM_KINDS = ("percentile", "mse", "entropy")


def _gaussian_with_outliers(n: int = 20000, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=gen)
    x[:2] = 80.0
    return x


def _amax(observer: Observer, bits: int = 8) -> float:
    scale, _ = observer.qparams(bits=bits, signed=True, symmetric=True)
    return float(scale) * (2 ** (bits - 1) - 1)


def _feed(observer: Observer, x: torch.Tensor, chunks: int = 1) -> Observer:
    for part in x.chunk(chunks):
        observer.update(part)
    return observer


# --------------------------------------------------------------------------- factory


def test_kinds_and_factory() -> None:
    assert OBSERVER_KINDS == ("minmax", "moving_average", "percentile", "mse", "entropy")
    for kind in OBSERVER_KINDS:
        observer = make_observer(kind, name="layer1")
        assert observer.kind == kind and observer.name == "layer1" and observer.batches == 0
    with pytest.raises(ValueError, match="minmax, moving_average, percentile, mse, entropy"):
        make_observer("kmeans")
    with pytest.raises(TypeError, match="unknown option"):
        make_observer("minmax", percentile=99.0)
    with pytest.raises(ValueError, match="averaging_constant"):
        make_observer("moving_average", averaging_constant=0.0)
    with pytest.raises(ValueError, match="percentile"):
        make_observer("percentile", percentile=101.0)


def test_histogram_observers_reject_per_channel() -> None:
    for kind in HISTOGRAM_KINDS:
        with pytest.raises(ValueError, match="per-channel"):
            make_observer(kind, axis=0)


# --------------------------------------------------------------------------- qparams


def test_minmax_qparams_all_modes() -> None:
    observer = make_observer("minmax")
    observer.update(torch.tensor([-1.0, 0.5, 3.0]))
    scale, zero_point = observer.qparams(bits=8, signed=False, symmetric=False)
    assert scale.dtype == torch.float32 and zero_point.dtype == torch.int32
    assert scale.shape == () and zero_point.shape == ()
    assert float(scale) == pytest.approx(4 / 255, rel=1e-6)
    assert int(zero_point) == 64  # round(1 / (4/255)) = round(63.75)
    scale, zero_point = observer.qparams(bits=8, signed=True, symmetric=False)
    assert float(scale) == pytest.approx(4 / 255, rel=1e-6) and int(zero_point) == -64
    scale, zero_point = observer.qparams(bits=8, signed=True, symmetric=True)
    assert float(scale) == pytest.approx(3 / 127, rel=1e-6) and int(zero_point) == 0
    scale, zero_point = observer.qparams(bits=8, signed=False, symmetric=True)
    assert float(scale) == pytest.approx(3 / 127, rel=1e-6) and int(zero_point) == 128
    scale, zero_point = observer.qparams(bits=4, signed=False, symmetric=False)
    assert float(scale) == pytest.approx(4 / 15, rel=1e-6) and int(zero_point) == 4
    with pytest.raises(ValueError, match="bits"):
        observer.qparams(bits=1, signed=True, symmetric=True)


def test_range_always_includes_zero() -> None:
    scale, zero_point = qparams_from_range(2.0, 5.0, bits=8, signed=False, symmetric=False)
    assert float(scale) == pytest.approx(5 / 255) and int(zero_point) == 0
    scale, zero_point = qparams_from_range(-5.0, -2.0, bits=8, signed=False, symmetric=False)
    assert float(scale) == pytest.approx(5 / 255) and int(zero_point) == 255
    # zero is exactly representable: (0 - zp) * scale == 0 with an integer zp
    scale, zero_point = qparams_from_range(-0.3, 7.1, bits=8, signed=True, symmetric=False)
    assert -128 <= int(zero_point) <= 127


@pytest.mark.parametrize("kind", OBSERVER_KINDS)
@pytest.mark.parametrize("value", [0.0, 2.5])
def test_constant_input_gives_tiny_positive_scale(kind: str, value: float) -> None:
    observer = make_observer(kind)
    for _ in range(3):
        observer.update(torch.full((64,), value))
    for signed in (False, True):
        for symmetric in (False, True):
            scale, zero_point = observer.qparams(bits=8, signed=signed, symmetric=symmetric)
            assert math.isfinite(float(scale)) and float(scale) > 0
            if value == 0.0:
                assert float(scale) == pytest.approx(obs.SCALE_EPS)
            else:  # a constant is represented exactly enough
                q = torch.round(torch.tensor(value) / scale) + zero_point
                assert float((q - zero_point) * scale) == pytest.approx(value, rel=0.02)


@pytest.mark.parametrize("kind", OBSERVER_KINDS)
def test_no_update_raises(kind: str) -> None:
    with pytest.raises(RuntimeError, match="before any update"):
        make_observer(kind, name="fc").qparams(bits=8, signed=True, symmetric=True)


@pytest.mark.parametrize("kind", OBSERVER_KINDS)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_input_raises_with_name(kind: str, bad: float) -> None:
    observer = make_observer(kind, name="encoder.layer3.fc1")
    observer.update(torch.randn(16))
    x = torch.randn(16)
    x[5] = bad
    with pytest.raises(ValueError, match=r"encoder\.layer3\.fc1.*NaN or Inf"):
        observer.update(x)
    assert observer.batches == 1  # the bad batch left no trace


def test_bad_inputs_raise() -> None:
    observer = make_observer("minmax", name="n")
    with pytest.raises(ValueError, match="empty"):
        observer.update(torch.empty(0))
    with pytest.raises(ValueError, match="complex"):
        observer.update(torch.zeros(3, dtype=torch.complex64))
    with pytest.raises(TypeError):
        observer.update([1.0, 2.0])  # type: ignore[arg-type]


def test_any_dtype_is_accepted() -> None:
    for dtype in (torch.float16, torch.bfloat16, torch.float64, torch.int8, torch.int64):
        for kind in OBSERVER_KINDS:
            observer = make_observer(kind)
            observer.update(torch.tensor([-2, 0, 1, 4], dtype=dtype))
            scale, _ = observer.qparams(bits=8, signed=False, symmetric=False)
            assert scale.dtype == torch.float32 and float(scale) > 0


def test_update_does_not_track_gradients() -> None:
    x = torch.randn(32, requires_grad=True)
    for kind in OBSERVER_KINDS:
        observer = make_observer(kind)
        observer.update(x * 2)
        scale, _ = observer.qparams(bits=8, signed=True, symmetric=True)
        assert not scale.requires_grad


# --------------------------------------------------------------------------- known data


def test_outliers_are_clipped_by_calibrating_observers() -> None:
    x = _gaussian_with_outliers(100_000)
    minmax = _feed(make_observer("minmax"), x, 4)
    assert _amax(minmax) == pytest.approx(80.0)
    for kind in ("percentile", "entropy"):
        amax = _amax(_feed(make_observer(kind), x, 4))
        assert 2.5 < amax < 8.0, (kind, amax)
    # MSE trades rounding noise for clipping error: at 4 bits two outliers in 100k are not
    # worth the noise they would cost everyone else (at 8 bits they are).
    amax = _amax(_feed(make_observer("mse"), x, 4), bits=4)
    assert 1.5 < amax < 6.0, amax
    # affine ranges clip too, on both sides of zero
    for kind in HISTOGRAM_KINDS:
        observer = _feed(make_observer(kind), x, 4)
        bits = 4 if kind == "mse" else 8
        scale, _ = observer.qparams(bits=bits, signed=False, symmetric=False)
        assert float(scale) * (2**bits - 1) < 15.0, kind


def test_uniform_data_is_not_clipped_much() -> None:
    x = torch.rand(20000, generator=torch.Generator().manual_seed(1)) * 2 - 1
    for kind in OBSERVER_KINDS:
        amax = _amax(_feed(make_observer(kind), x, 5))
        assert 0.9 < amax <= 1.0 + 1e-4, (kind, amax)


def test_percentile_matches_empirical_quantile() -> None:
    x = torch.randn(40000, generator=torch.Generator().manual_seed(2))
    observer = _feed(make_observer("percentile", percentile=99.0), x, 8)
    expected = float(torch.quantile(x.abs(), 0.99))
    assert _amax(observer) == pytest.approx(expected, rel=0.01)
    lo, hi = float(torch.quantile(x, 0.01)), float(torch.quantile(x, 0.99))
    scale, zero_point = observer.qparams(bits=8, signed=False, symmetric=False)
    assert float(scale) * 255 == pytest.approx(hi - lo, rel=0.01)
    assert float(-zero_point * scale) == pytest.approx(lo, abs=2 * float(scale))


def test_mse_picks_range_with_lower_error_than_minmax() -> None:
    x = torch.distributions.Laplace(0.0, 1.0).sample((20000,))
    mse, minmax = make_observer("mse"), make_observer("minmax")
    mse.update(x)
    minmax.update(x)

    def error(observer: Observer) -> float:
        scale, zero_point = observer.qparams(bits=4, signed=True, symmetric=True)
        q = torch.clamp(torch.round(x / scale) + zero_point, -7, 7)
        return float(((q - zero_point) * scale - x).pow(2).mean())

    assert error(mse) < 0.7 * error(minmax)


def test_entropy_matches_reference_kl_algorithm() -> None:
    def reference(counts: torch.Tensor, extent: float, levels: int) -> float:
        n, total = counts.numel(), float(counts.sum())
        divergences = []
        for i in range(levels, n + 1):
            p = counts[:i].clone()
            p[i - 1] += total - float(counts[:i].sum())
            nonzero = p > 0
            q = torch.zeros(i, dtype=torch.float64)
            level = [j * levels // i for j in range(i)]
            for g in range(levels):
                members = [j for j in range(i) if level[j] == g]
                count = int(nonzero[members].sum())
                for j in members:
                    if nonzero[j]:
                        q[j] = float(counts[members].sum()) / count
            if float(q.sum()) == 0:
                divergences.append(math.inf)
                continue
            p = p / p.sum() + obs._KL_EPS
            q = q / q.sum() + obs._KL_EPS
            p, q = p / p.sum(), q / q.sum()
            divergences.append(float((p * torch.log(p / q)).sum()))
        best = min(divergences)
        last = max(k for k, d in enumerate(divergences) if d == best)
        return (last + levels) * extent / n

    gen = torch.Generator().manual_seed(3)
    for trial in range(4):
        x = torch.randn(3000, generator=gen).abs() * (1 + trial)
        counts = torch.histc(x, bins=48, min=0, max=8).double()
        if trial == 3:
            counts[30:40] = 0
            counts[-1] += 4
        expected = reference(counts, 8.0, 8)
        assert obs._kl_threshold(counts.numpy(), 8.0, 8) == pytest.approx(expected), trial


# --------------------------------------------------------------------------- per-channel


def test_per_channel_minmax() -> None:
    x = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(4))
    observer = make_observer("minmax", axis=0)
    observer.update(x)
    observer.update(x * 0.5)
    lo, hi = observer.observed_range()
    assert torch.equal(lo, x.amin(dim=(1, 2))) and torch.equal(hi, x.amax(dim=(1, 2)))
    scale, zero_point = observer.qparams(bits=8, signed=True, symmetric=True)
    assert scale.shape == (4,) and zero_point.shape == (4,)
    expected = torch.maximum(-lo, hi) / 127
    assert torch.allclose(scale, expected) and torch.all(zero_point == 0)
    scale, zero_point = observer.qparams(bits=8, signed=False, symmetric=False)
    assert torch.allclose(scale, (hi.clamp(min=0) - lo.clamp(max=0)) / 255)

    last_axis = make_observer("minmax", axis=-1)
    last_axis.update(x)
    lo, hi = last_axis.observed_range()
    assert lo.shape == (5,) and torch.equal(hi, x.amax(dim=(0, 1)))
    with pytest.raises(ValueError, match="channels"):
        last_axis.update(torch.randn(4, 3, 6))
    with pytest.raises(ValueError, match="axis"):
        make_observer("minmax", axis=3).update(x)


def test_per_channel_moving_average() -> None:
    observer = make_observer("moving_average", axis=1, averaging_constant=0.5)
    first = torch.tensor([[-1.0, 2.0], [1.0, 4.0]])  # channel mins [-1, 2], maxs [1, 4]
    second = torch.tensor([[-3.0, 0.0], [3.0, 8.0]])  # channel mins [-3, 0], maxs [3, 8]
    observer.update(first)
    lo, hi = observer.observed_range()
    assert lo.tolist() == [-1.0, 2.0] and hi.tolist() == [1.0, 4.0]  # first batch initialises
    observer.update(second)
    lo, hi = observer.observed_range()
    assert lo.tolist() == [-2.0, 1.0] and hi.tolist() == [2.0, 6.0]
    scale, _ = observer.qparams(bits=8, signed=True, symmetric=True)
    assert scale.shape == (2,) and torch.allclose(scale, torch.tensor([2.0, 6.0]) / 127)


def test_moving_average_default_constant() -> None:
    observer = make_observer("moving_average")
    observer.update(torch.tensor([-1.0, 1.0]))
    observer.update(torch.tensor([-101.0, 101.0]))
    lo, hi = observer.observed_range()
    assert float(lo) == pytest.approx(-2.0) and float(hi) == pytest.approx(2.0)


# --------------------------------------------------------------------------- streaming


def test_streaming_equals_one_shot() -> None:
    gen = torch.Generator().manual_seed(5)
    # growing spread, so the histogram range has to grow several times
    parts = [torch.randn(2000, generator=gen) * (1 + k) for k in range(10)]
    whole = torch.cat(parts)
    for kind in OBSERVER_KINDS:
        if kind == "moving_average":
            continue
        streamed, one_shot = make_observer(kind), make_observer(kind)
        for part in parts:
            streamed.update(part)
        one_shot.update(whole)
        assert streamed.batches == 10 and one_shot.batches == 1
        for symmetric in (True, False):
            a, za = streamed.qparams(bits=8, signed=True, symmetric=symmetric)
            b, zb = one_shot.qparams(bits=8, signed=True, symmetric=symmetric)
            if kind == "minmax":
                assert torch.equal(a, b) and torch.equal(za, zb)
            else:
                # the streamed histogram is coarser (its range grew in integer steps), and
                # entropy calibration is the most sensitive to the bin width
                tolerance = 0.1 if kind == "entropy" else 0.05
                assert float(a) == pytest.approx(float(b), rel=tolerance), (kind, symmetric)
                assert abs(int(za) - int(zb)) <= 3, (kind, symmetric)


def test_histogram_growth_keeps_every_count() -> None:
    observer = make_observer("percentile", bins=64)
    total = 0
    batches = [torch.zeros(10), torch.rand(100), -torch.rand(50) * 7, torch.rand(30) * 1e3]
    for x in batches:
        observer.update(x)
        total += x.numel()
        counts, lo, hi = observer.histogram()  # type: ignore[attr-defined]
        assert float(counts.sum()) == total
        assert lo <= min(0.0, float(observer.observed_range()[0])) and hi >= 0.0
    assert observer.observed_range()[1] == pytest.approx(float(x.max()))


def test_histogram_memory_is_flat() -> None:
    gen = torch.Generator().manual_seed(6)
    for kind in HISTOGRAM_KINDS:
        observer = make_observer(kind)
        observer.update(torch.randn(100, generator=gen))

        def size(o: Observer) -> int:
            return sum(t.numel() * t.element_size() for t in o.state().values())

        before = size(observer)
        for k in range(100):
            observer.update(torch.randn(100, generator=gen) * (1 + k))
        assert size(observer) == before
        assert observer.batches == 101


# --------------------------------------------------------------------------- merge / state


def test_merge_equals_single_observer() -> None:
    gen = torch.Generator().manual_seed(7)
    a_data, b_data = torch.randn(5000, generator=gen), torch.randn(5000, generator=gen) * 3 + 1
    for kind in ("minmax", *HISTOGRAM_KINDS):
        a, b, both = make_observer(kind), make_observer(kind), make_observer(kind)
        _feed(a, a_data, 2)
        _feed(b, b_data, 3)
        _feed(both, torch.cat([a_data, b_data]), 5)
        a.merge(b)
        assert a.batches == 5
        for symmetric in (True, False):
            sa, za = a.qparams(bits=8, signed=False, symmetric=symmetric)
            sb, zb = both.qparams(bits=8, signed=False, symmetric=symmetric)
            if kind == "minmax":
                assert torch.equal(sa, sb) and torch.equal(za, zb)
            else:
                assert float(sa) == pytest.approx(float(sb), rel=0.05), (kind, symmetric)
                assert abs(int(za) - int(zb)) <= 3
    per_channel_a, per_channel_b = make_observer("minmax", axis=0), make_observer("minmax", axis=0)
    per_channel_a.update(a_data.reshape(10, -1))
    per_channel_b.update(b_data.reshape(10, -1))
    per_channel_a.merge(per_channel_b)
    lo, hi = per_channel_a.observed_range()
    assert torch.equal(
        lo, torch.minimum(a_data.reshape(10, -1).amin(1), b_data.reshape(10, -1).amin(1))
    )
    assert torch.equal(
        hi, torch.maximum(a_data.reshape(10, -1).amax(1), b_data.reshape(10, -1).amax(1))
    )


def test_merge_edge_cases() -> None:
    fresh, seen = make_observer("minmax"), make_observer("minmax")
    seen.update(torch.tensor([-1.0, 2.0]))
    fresh.merge(seen)  # into an empty observer
    assert fresh.batches == 1 and [float(v) for v in fresh.observed_range()] == [-1.0, 2.0]
    seen.merge(make_observer("minmax"))  # an empty one changes nothing
    assert seen.batches == 1
    with pytest.raises(TypeError):
        seen.merge(make_observer("percentile"))
    with pytest.raises(ValueError, match="axis"):
        make_observer("minmax", axis=0).merge(make_observer("minmax"))
    with pytest.raises(ValueError, match="bins"):
        make_observer("mse", bins=128).merge(_feed(make_observer("mse", bins=64), torch.ones(3)))
    # moving averages combine as a batch-weighted mean
    one, three = make_observer("moving_average"), make_observer("moving_average")
    one.update(torch.tensor([-4.0, 4.0]))
    for _ in range(3):
        three.update(torch.tensor([-8.0, 8.0]))
    one.merge(three)
    assert one.batches == 4 and float(one.observed_range()[1]) == pytest.approx(7.0)


@pytest.mark.parametrize("kind", OBSERVER_KINDS)
def test_state_round_trip(kind: str) -> None:
    gen = torch.Generator().manual_seed(8)
    axis = 0 if kind in ("minmax", "moving_average") else None
    original = make_observer(kind, axis=axis)
    empty_state = original.state()
    for _ in range(3):
        original.update(torch.randn(4, 50, generator=gen))
    state = original.state()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    restored = make_observer(kind, axis=axis)
    restored.load_state(state)
    assert restored.batches == 3
    for symmetric in (True, False):
        a = original.qparams(bits=8, signed=True, symmetric=symmetric)
        b = restored.qparams(bits=8, signed=True, symmetric=symmetric)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # resuming continues exactly like the original
    more = torch.randn(4, 50, generator=gen) * 5
    original.update(more)
    restored.update(more)
    for key, value in original.state().items():
        assert torch.equal(value, restored.state()[key]), key
    # an empty state resets
    restored.load_state(empty_state)
    assert restored.batches == 0
    with pytest.raises(RuntimeError):
        restored.qparams(bits=8, signed=True, symmetric=True)
    with pytest.raises(KeyError):
        restored.load_state({"batches": torch.tensor(1)})


def test_load_state_validates_shapes() -> None:
    histogram = make_observer("entropy", bins=64)
    histogram.update(torch.randn(10))
    with pytest.raises(ValueError, match="bins|shape"):
        make_observer("entropy", bins=128).load_state(histogram.state())
    per_tensor = make_observer("minmax")
    per_tensor.update(torch.randn(10))
    with pytest.raises(ValueError, match="axis"):
        make_observer("minmax", axis=0).load_state(per_tensor.state())


# --------------------------------------------------------------------------- distributed


def test_all_reduce_is_noop_without_process_group() -> None:
    observer = make_observer("minmax")
    observer.update(torch.tensor([1.0, 2.0]))
    before = observer.state()
    all_reduce_observer(observer)
    assert all(torch.equal(before[k], v) for k, v in observer.state().items())


def _rank_data(rank: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(100 + rank)
    return torch.randn(6, 400, generator=gen) * (1 + 2 * rank) + rank


def _distributed_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        results: dict[str, object] = {}
        data = _rank_data(rank)
        configs = [(kind, None) for kind in OBSERVER_KINDS] + [
            ("minmax", 0),
            ("moving_average", 0),
        ]
        for kind, axis in configs:
            observer = make_observer(kind, name=f"{kind}-{axis}", axis=axis)
            for part in data.chunk(2 + rank, dim=1):  # different batch counts per rank
                observer.update(part)
            all_reduce_observer(observer)
            results[f"{kind}-{axis}"] = (
                observer.batches,
                [
                    observer.qparams(bits=8, signed=s, symmetric=m)
                    for s in (False, True)
                    for m in (False, True)
                ],
            )
        # a rank that saw nothing still takes part
        idle = make_observer("percentile")
        if rank == 0:
            idle.update(data)
        all_reduce_observer(idle)
        results["idle"] = (idle.batches, [idle.qparams(bits=8, signed=True, symmetric=True)])
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_all_reduce_observer_two_processes(tmp_path: Path) -> None:
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    mp.spawn(_distributed_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        batches0, params0 = rank0[key]
        batches1, params1 = rank1[key]
        assert batches0 == batches1 == (1 if key == "idle" else 5), key
        for (s0, z0), (s1, z1) in zip(params0, params1, strict=True):
            assert torch.equal(s0, s1) and torch.equal(z0, z1), key
    # min/max reduction is exact: equal to one observer seeing both ranks' data
    both = make_observer("minmax")
    both.update(torch.cat([_rank_data(0), _rank_data(1)], dim=1))
    expected = [
        both.qparams(bits=8, signed=s, symmetric=m) for s in (False, True) for m in (False, True)
    ]
    for (s0, z0), (s1, z1) in zip(rank0["minmax-None"][1], expected, strict=True):
        assert torch.equal(s0, s1) and torch.equal(z0, z1)
    channels = make_observer("minmax", axis=0)
    channels.update(torch.cat([_rank_data(0), _rank_data(1)], dim=1))
    scale, _ = rank0["minmax-0"][1][3]
    assert torch.equal(scale, channels.qparams(bits=8, signed=True, symmetric=True)[0])
