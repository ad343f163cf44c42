"""Streaming calibration observers for post-training quantization.

An observer sees one tensor per calibration batch (:meth:`Observer.update`) and,
at the end, turns what it saw into quantization parameters
(:meth:`Observer.qparams`).  Memory never grows with the number of batches: the
observers keep running statistics (min/max, exponential moving averages) or a
fixed-size streaming histogram, never the samples themselves.

Kinds (see :data:`OBSERVER_KINDS` and :func:`make_observer`):

``minmax``
    Running minimum and maximum.  Per-tensor or per-channel (``axis``).
``moving_average``
    Exponential moving average of the per-batch minimum and maximum
    (``averaging_constant``, default 0.01; the first batch initialises it).
    Per-tensor or per-channel.
``percentile``
    Clips at a percentile (default 99.99) of the values seen, read off a
    streaming histogram.  Symmetric: that percentile of ``|x|``; affine: the
    ``100 - p`` and ``p`` percentiles of ``x``.
``mse``
    Picks the clipping range that minimises the expected quantization error
    (rounding noise ``delta**2 / 12`` for in-range values plus the squared
    clipping error of out-of-range values), estimated from the histogram over
    candidate ranges at histogram bin edges.
``entropy``
    TensorRT-style KL-divergence calibration on the histogram of ``|x|``:
    for each candidate threshold ``i`` (in bins, from the number of
    quantization levels up to all bins) the reference distribution ``P`` is the
    histogram clipped at ``i`` with the outliers folded into its last bin, the
    candidate ``Q`` is ``bins[:i]`` merged into the quantization levels and
    expanded back over the non-zero bins of ``P``; the threshold with the
    smallest ``KL(P || Q)`` wins.  Empty bins get a tiny additive epsilon (as in
    MXNet/TVM) so that the divergence stays finite.

The histogram observers (``percentile``, ``mse``, ``entropy``) are per-tensor
only.  Their histogram has a fixed number of bins (default 2048) over a range
that always contains 0; when a batch falls outside it, the range grows by an
integer factor with the old bin edges kept on the new grid, so the existing
counts are re-binned exactly by summing neighbouring bins.  Histograms with
unrelated ranges (:meth:`Observer.merge`, :func:`all_reduce_observer`) are
re-binned to their common range assuming a uniform density inside each bin.

Every input is checked: a NaN or Inf raises :class:`ValueError` naming the
observer (``name``).  Inputs may live on any device and have any real dtype;
statistics are computed in float32 on the input's device (histogram counts in
float64, float32 on MPS).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import torch
import torch.distributed as dist

from acekit.quant.qmath import SCALE_EPS, check_bits, integer_range, qparams_from_range

__all__ = [
    "DEFAULT_BINS",
    "OBSERVER_KINDS",
    "SCALE_EPS",
    "EntropyObserver",
    "MinMaxObserver",
    "MovingAverageObserver",
    "MseObserver",
    "Observer",
    "PercentileObserver",
    "all_reduce_observer",
    "integer_range",
    "make_observer",
    "qparams_from_range",
]

#: Default number of bins of the streaming histogram.
DEFAULT_BINS = 2048
# Additive smoothing of the distributions compared by the entropy observer.
_KL_EPS = 1e-10
# Most candidate edges per side searched by the affine MSE observer.
_MSE_MAX_CANDIDATES = 512
# Candidate thresholds evaluated together by the entropy observer.
# Elements per intermediate array in the entropy candidate search (bounds its memory).
_SEARCH_CHUNK = 16384


# --------------------------------------------------------------------------- #
# Histogram helpers (pure functions on a counts vector over [lo, hi])
# --------------------------------------------------------------------------- #


def _count_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _f32_down(value: float) -> float:
    """Largest float32 value <= ``value`` (histc compares in the input dtype)."""
    t = torch.tensor(value, dtype=torch.float32)
    if t.item() > value:
        t = torch.nextafter(t, torch.tensor(-math.inf))
    return float(t.item())


def _f32_up(value: float) -> float:
    """Smallest float32 value >= ``value``."""
    t = torch.tensor(value, dtype=torch.float32)
    if t.item() < value:
        t = torch.nextafter(t, torch.tensor(math.inf))
    return float(t.item())


def _cdf(counts: torch.Tensor, lo: float, hi: float, points: torch.Tensor) -> torch.Tensor:
    """Cumulative count at ``points`` of a histogram with uniform density per bin."""
    n = counts.numel()
    width = (hi - lo) / n
    u = ((points - lo) / width).clamp(0.0, float(n))
    idx = u.floor().long().clamp(max=n - 1)
    frac = u - idx.to(u.dtype)
    cum = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
    return cum[idx] + frac * counts[idx]


def _rebin(
    counts: torch.Tensor, lo: float, hi: float, new_lo: float, new_hi: float
) -> torch.Tensor:
    """Re-bin ``counts`` over ``[lo, hi]`` to the same number of bins over a wider range."""
    if (lo, hi) == (new_lo, new_hi):
        return counts.clone()
    if new_lo > lo or new_hi < hi:
        raise ValueError("internal error: can only re-bin into a range that contains the old one")
    n = counts.numel()
    if hi == lo:  # a point mass (only possible at 0, where every range starts)
        out = torch.zeros_like(counts)
        if new_hi > new_lo:
            index = min(n - 1, max(0, math.floor((lo - new_lo) / ((new_hi - new_lo) / n))))
        else:
            index = 0
        out[index] = counts.sum()
        return out
    edges = torch.linspace(new_lo, new_hi, n + 1, dtype=counts.dtype, device=counts.device)
    return torch.diff(_cdf(counts, lo, hi, edges)).clamp_(min=0.0)


def _grow(
    counts: torch.Tensor, lo: float, hi: float, need_lo: float, need_hi: float
) -> tuple[torch.Tensor, float, float]:
    """Widen the histogram range to cover ``[need_lo, need_hi]``.

    The new bin width is an integer multiple ``k`` of the old one and the old
    edges stay on the new grid, so old bins are summed exactly into new ones.
    """
    need_lo, need_hi = min(need_lo, lo), max(need_hi, hi)
    if need_lo >= lo and need_hi <= hi:
        return counts, lo, hi
    n = counts.numel()
    if hi == lo:
        new_lo, new_hi = _f32_down(need_lo), _f32_up(need_hi)
        return _rebin(counts, lo, hi, new_lo, new_hi), new_lo, new_hi
    width = (hi - lo) / n
    left = max(0, math.ceil((lo - need_lo) / width))
    right = max(0, math.ceil((need_hi - hi) / width))
    needed = n + left + right
    k = -(-needed // n)
    if k > 2**40:  # absurd growth (e.g. 1e-30 then 1e30): fall back to interpolation
        new_lo, new_hi = _f32_down(need_lo), _f32_up(need_hi)
        return _rebin(counts, lo, hi, new_lo, new_hi), new_lo, new_hi
    slack = n * k - needed
    if left and right:
        shift = left + slack // 2
    elif left:
        shift = left + slack
    else:
        shift = 0
    index = torch.div(torch.arange(n, device=counts.device) + shift, k, rounding_mode="floor")
    out = torch.zeros_like(counts).index_add_(0, index, counts)
    new_lo = lo - shift * width
    new_hi = new_lo + n * k * width
    return out, _f32_down(min(new_lo, need_lo)), _f32_up(max(new_hi, need_hi))


# The clipping searches below run once per observer at qparams() time on a small
# histogram (a few thousand bins), copied to the host as a NumPy float64 array:
# NumPy stays single-threaded, where torch's intra-op thread pool costs far more
# than the work on such sizes (badly so on a busy CPU).


def _np_cdf(counts: npt.NDArray[np.float64], lo: float, hi: float, points: Any) -> Any:
    """NumPy twin of :func:`_cdf`."""
    n = counts.size
    width = (hi - lo) / n
    u = np.clip((np.asarray(points, dtype=np.float64) - lo) / width, 0.0, float(n))
    idx = np.minimum(np.floor(u).astype(np.int64), n - 1)
    cum = np.concatenate([[0.0], np.cumsum(counts)])
    return cum[idx] + (u - idx) * counts[idx]


def _abs_histogram(
    counts: npt.NDArray[np.float64], lo: float, hi: float
) -> tuple[npt.NDArray[np.float64], float]:
    """Histogram of ``|x|`` over ``[0, max(-lo, hi)]`` with the same number of bins."""
    extent = max(-lo, hi)
    if extent <= 0.0:
        return counts.copy(), 0.0
    t = np.linspace(0.0, extent, counts.size + 1)
    inside = _np_cdf(counts, lo, hi, t) - _np_cdf(counts, lo, hi, -t)
    return np.asarray(np.clip(np.diff(inside), 0.0, None), dtype=np.float64), extent


def _quantile(counts: npt.NDArray[np.float64], lo: float, hi: float, q: float) -> float:
    """The ``q`` quantile (0..1) of a histogram with uniform density per bin."""
    total = float(counts.sum())
    if total <= 0.0 or hi <= lo:
        return hi
    cum = np.cumsum(counts)
    target = q * total
    k = min(int(np.searchsorted(cum, target, side="left")), counts.size - 1)
    bin_count = float(counts[k])
    before = float(cum[k]) - bin_count
    frac = (target - before) / bin_count if bin_count > 0 else 1.0
    width = (hi - lo) / counts.size
    return lo + (k + min(max(frac, 0.0), 1.0)) * width


def _mse_symmetric(counts: npt.NDArray[np.float64], extent: float, levels: int) -> float:
    """Threshold ``t`` minimising expected error of quantizing ``|x|`` on ``[0, t]``.

    ``levels`` is the number of quantization steps between 0 and ``t``.
    """
    n = counts.size
    width = extent / n
    centers = (np.arange(n) + 0.5) * width
    second = centers**2 + width**2 / 12.0

    def suffix(v: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.concatenate([np.cumsum(v[::-1])[::-1], [0.0]])

    s0, s1, s2 = suffix(counts), suffix(counts * centers), suffix(counts * second)
    k = np.arange(1, n + 1)
    t = k * width
    clip = np.clip(s2[k] - 2.0 * t * s1[k] + t**2 * s0[k], 0.0, None)
    inside = float(counts.sum()) - s0[k]
    error = clip + inside * (t / levels) ** 2 / 12.0
    return float(t[int(np.argmin(error))])


def _mse_affine(
    counts: npt.NDArray[np.float64], lo: float, hi: float, levels: int
) -> tuple[float, float]:
    """Range ``[a, b]`` (a <= 0 <= b, at bin edges) minimising expected quantization error."""
    n = counts.size
    width = (hi - lo) / n
    edges = lo + np.arange(n + 1) * width
    centers = edges[:-1] + width / 2.0
    second = centers**2 + width**2 / 12.0
    p0 = np.concatenate([[0.0], np.cumsum(counts)])
    p1 = np.concatenate([[0.0], np.cumsum(counts * centers)])
    p2 = np.concatenate([[0.0], np.cumsum(counts * second)])
    total, t1, t2 = p0[-1], p1[-1], p2[-1]
    zero_pos = -lo / width
    low_last = min(n, max(0, math.floor(zero_pos + 1e-9)))
    high_first = min(n, max(0, math.ceil(zero_pos - 1e-9)))

    def candidates(first: int, last: int) -> npt.NDArray[np.int64]:
        if last - first + 1 <= _MSE_MAX_CANDIDATES:
            return np.arange(first, last + 1)
        return np.unique(np.round(np.linspace(first, last, _MSE_MAX_CANDIDATES)).astype(np.int64))

    m = candidates(0, low_last)
    k = candidates(high_first, n)
    a, b = edges[m], edges[k]
    left = np.clip(p2[m] - 2.0 * a * p1[m] + a**2 * p0[m], 0.0, None)
    s0, s1, s2 = total - p0[k], t1 - p1[k], t2 - p2[k]
    right = np.clip(s2 - 2.0 * b * s1 + b**2 * s0, 0.0, None)
    inside = total - p0[m][:, None] - s0[None, :]
    step = (b[None, :] - a[:, None]) / levels
    error = left[:, None] + right[None, :] + inside * step**2 / 12.0
    row, col = np.unravel_index(int(np.argmin(error)), error.shape)
    return float(a[row]), float(b[col])


def _kl_threshold(counts: npt.NDArray[np.float64], extent: float, levels: int) -> float:
    """TensorRT entropy calibration: the ``|x|`` threshold with minimal KL(P || Q).

    For a candidate of ``i`` bins, ``P`` is ``counts[:i]`` with the mass beyond
    folded into bin ``i - 1``; ``Q`` merges ``counts[:i]`` into ``levels`` groups
    (bin ``j`` -> ``j * levels // i``) and spreads each group's sum evenly over
    the bins where ``P`` is non-zero.  Both are normalised and smoothed with an
    additive epsilon per bin.  Instead of materialising ``P`` and ``Q`` for every
    candidate, the divergence is evaluated per group from prefix sums (exactly
    the same value), which is ``O(levels)`` per candidate.
    """
    n = counts.size
    total = float(counts.sum())
    if n <= levels or total <= 0.0 or extent <= 0.0:
        return extent
    eps = _KL_EPS
    nonzero = counts > 0
    a = np.where(nonzero, counts / total + eps, 0.0)  # unnormalised smoothed P
    a_log_a = np.where(nonzero, a * np.log(np.where(nonzero, a, 1.0)), 0.0)
    h_pre = np.concatenate([[0.0], np.cumsum(counts)])
    nz_pre = np.concatenate([[0.0], np.cumsum(nonzero.astype(np.float64))])
    a_pre = np.concatenate([[0.0], np.cumsum(a)])
    al_pre = np.concatenate([[0.0], np.cumsum(a_log_a)])
    group = np.arange(levels)[None, :]
    best_kl, best_i = math.inf, n
    rows_per_chunk = max(1, _SEARCH_CHUNK // levels)
    for first in range(levels, n + 1, rows_per_chunk):
        chunk = np.arange(first, min(first + rows_per_chunk, n + 1))
        i = chunk[:, None]
        last = chunk - 1
        # Bins [start, end) of each group, the last bin (i - 1) left out: added below.
        start = (group * i + levels - 1) // levels
        end = np.minimum(((group + 1) * i + levels - 1) // levels, last[:, None])
        group_sum = h_pre[end] - h_pre[start]
        group_nonzero = nz_pre[end] - nz_pre[start]
        group_a = a_pre[end] - a_pre[start]
        kept = h_pre[chunk]  # mass of counts[:i] == sum of Q before normalisation
        p_last = counts[last] + (total - kept)
        nz_last = p_last > 0
        a_last = np.where(nz_last, p_last / total + eps, 0.0)
        group_sum[:, -1] += counts[last]
        group_nonzero[:, -1] += nz_last
        group_a[:, -1] += a_last
        norm = 1.0 + eps * chunk  # smoothing renormalisation (i bins)
        denominator = np.maximum(group_nonzero, 1.0) * np.maximum(kept, 1e-300)[:, None]
        q = np.where(group_nonzero > 0, (group_sum / denominator + eps) / norm[:, None], 1.0)
        last_term = np.where(nz_last, a_last * np.log(np.where(nz_last, a_last, 1.0)), 0.0)
        self_term = al_pre[last] + last_term
        mass = a_pre[last] + a_last
        cross = (group_a * np.log(q)).sum(1)
        kl = np.where(kept > 0, (self_term - mass * np.log(norm) - cross) / norm, math.inf)
        # Last minimum wins ties (as NVIDIA's calibrator does): prefer less clipping.
        pos = chunk.size - 1 - int(np.argmin(kl[::-1]))
        if float(kl[pos]) <= best_kl:
            best_kl, best_i = float(kl[pos]), int(chunk[pos])
    return best_i * extent / n


# --------------------------------------------------------------------------- #
# Distributed helpers
# --------------------------------------------------------------------------- #


def _comm_device(group: Any) -> torch.device:
    backend = str(dist.get_backend(group)).lower()
    if "nccl" in backend and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_reduce(tensor: torch.Tensor, op: Any, group: Any) -> torch.Tensor:
    dist.all_reduce(tensor, op=op, group=group)
    return tensor


def _agree_channels(label: str, local: int | None, device: torch.device, group: Any) -> int | None:
    """All-reduce the channel count; ``None`` when no rank has seen data."""
    big = 2**62
    t = torch.tensor(
        [local if local is not None else -1, -(local if local is not None else big)],
        dtype=torch.int64,
        device=device,
    )
    largest, neg_smallest = _all_reduce(t, dist.ReduceOp.MAX, group).tolist()
    if largest < 0:
        return None
    if -neg_smallest != largest:
        raise ValueError(f"{label}: ranks saw different channel counts")
    return int(largest)


# --------------------------------------------------------------------------- #
# Observers
# --------------------------------------------------------------------------- #


class Observer:
    """Base class of the streaming calibration observers.

    Subclasses set :attr:`kind` and implement the statistics; the base class
    validates inputs (NaN/Inf, empty, complex), handles the per-channel layout
    and turns the observed range into quantization parameters.
    """

    kind: ClassVar[str] = ""
    #: Whether ``axis`` (per-channel statistics) is supported.
    per_channel: ClassVar[bool] = False

    def __init__(self, *, name: str = "", axis: int | None = None, **options: Any) -> None:
        """Create an observer labelled ``name``; ``axis`` selects per-channel statistics."""
        self.name = name
        if options:
            raise TypeError(f"{self._label()}: unknown option(s) {sorted(options)}")
        if axis is not None:
            if isinstance(axis, bool) or not isinstance(axis, int):
                raise TypeError(f"{self._label()}: axis must be an int or None, got {axis!r}")
            if not self.per_channel:
                raise ValueError(
                    f"{self._label()}: per-channel observation (axis={axis}) is not supported; "
                    "use 'minmax' or 'moving_average' for per-channel ranges"
                )
        self.axis = axis
        self._batches = 0

    def _label(self) -> str:
        return f"{self.kind or type(self).__name__} observer {self.name!r}"

    def __repr__(self) -> str:
        """Short description: kind, name, axis and batch count."""
        return (
            f"{type(self).__name__}(name={self.name!r}, axis={self.axis!r}, "
            f"batches={self._batches})"
        )

    @property
    def batches(self) -> int:
        """How many batches :meth:`update` has seen (summed over merges)."""
        return self._batches

    # -- observing ----------------------------------------------------------

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{self._label()}: expected a torch.Tensor, got {type(x).__name__}")
        if x.is_complex():
            raise ValueError(f"{self._label()}: complex tensors cannot be observed")
        if x.numel() == 0:
            raise ValueError(f"{self._label()}: empty tensor (shape {tuple(x.shape)})")
        data = x.detach().to(torch.float32)
        if self.axis is None:
            return data.reshape(-1)
        if data.dim() == 0 or not -data.dim() <= self.axis < data.dim():
            raise ValueError(
                f"{self._label()}: axis {self.axis} is out of range for a tensor of shape "
                f"{tuple(x.shape)}"
            )
        return data.movedim(self.axis, 0).reshape(data.shape[self.axis], -1)

    def update(self, x: torch.Tensor) -> None:
        """Observe one batch ``x`` (any device, any real dtype; computed in float32).

        Raises :class:`ValueError` (naming the observer) if ``x`` contains NaN or
        Inf, is empty, or its channel count differs from earlier batches.
        """
        with torch.no_grad():
            data = self._prepare(x)
            if self.axis is None:
                batch_min, batch_max = torch.aminmax(data)
            else:
                batch_min, batch_max = torch.aminmax(data, dim=1)
            if not bool(torch.isfinite(batch_min).all() & torch.isfinite(batch_max).all()):
                raise ValueError(
                    f"{self._label()}: input contains NaN or Inf (after conversion to float32)"
                )
            self._observe(data, batch_min, batch_max)
            self._batches += 1

    def _observe(
        self, data: torch.Tensor, batch_min: torch.Tensor, batch_max: torch.Tensor
    ) -> None:
        raise NotImplementedError

    # -- results ------------------------------------------------------------

    def _range(
        self, *, bits: int, signed: bool, symmetric: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def qparams(
        self, *, bits: int, signed: bool, symmetric: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantization parameters ``(scale, zero_point)`` for what was observed.

        ``scale`` is float32 and ``zero_point`` int32, of shape ``[]`` per-tensor
        or ``[C]`` per-channel, on the device of the statistics.  See
        :func:`qparams_from_range` for the integer ranges and formulas.  Raises
        :class:`RuntimeError` if no batch was observed.
        """
        check_bits(bits, maximum=16)
        if self._batches == 0:
            raise RuntimeError(f"{self._label()}: qparams() called before any update()")
        with torch.no_grad():
            lo, hi = self._range(bits=bits, signed=signed, symmetric=symmetric)
            return qparams_from_range(lo, hi, bits=bits, signed=signed, symmetric=symmetric)

    def observed_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The raw ``(min, max)`` of all observed values (EMA values for moving_average)."""
        raise NotImplementedError

    # -- state --------------------------------------------------------------

    def state(self) -> dict[str, torch.Tensor]:
        """Everything needed to resume or merge this observer, as cloned tensors."""
        raise NotImplementedError

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Replace this observer's statistics with ``state`` (from :meth:`state`)."""
        raise NotImplementedError

    def merge(self, other: Observer) -> None:
        """Fold the statistics of ``other`` (same kind and configuration) into this one."""
        raise NotImplementedError

    def _all_reduce(self, group: Any) -> None:
        raise NotImplementedError

    def _check_compatible(self, other: Observer) -> None:
        if type(other) is not type(self):
            raise TypeError(
                f"{self._label()}: cannot merge a {type(other).__name__} into a "
                f"{type(self).__name__}"
            )
        if other.axis != self.axis:
            raise ValueError(
                f"{self._label()}: cannot merge observers with axis {self.axis} and {other.axis}"
            )

    def _load_batches(self, state: dict[str, torch.Tensor], keys: tuple[str, ...]) -> int:
        missing = [key for key in keys if key not in state]
        if missing:
            raise KeyError(f"{self._label()}: state is missing {missing}")
        batches = int(state["batches"])
        if batches < 0:
            raise ValueError(f"{self._label()}: negative batch count in state")
        return batches


class _RangeObserver(Observer):
    """Shared storage of the min/max style observers (per-tensor or per-channel)."""

    per_channel = True
    _KEYS = ("batches", "min_val", "max_val")

    def __init__(self, *, name: str = "", axis: int | None = None, **options: Any) -> None:
        super().__init__(name=name, axis=axis, **options)
        self._min: torch.Tensor | None = None
        self._max: torch.Tensor | None = None

    def _check_channels(self, batch_min: torch.Tensor) -> None:
        if self._min is not None and self._min.shape != batch_min.shape:
            raise ValueError(
                f"{self._label()}: expected {self._min.numel()} channels along axis "
                f"{self.axis}, got {batch_min.numel()}"
            )

    def _stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._min is None or self._max is None:
            raise RuntimeError(f"{self._label()}: no batch observed yet")
        return self._min, self._max

    def _range(
        self, *, bits: int, signed: bool, symmetric: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._stats()

    def observed_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The tracked ``(min, max)`` (per-channel: two ``[C]`` tensors)."""
        lo, hi = self._stats()
        return lo.clone(), hi.clone()

    def state(self) -> dict[str, torch.Tensor]:
        """``batches``, ``min_val`` and ``max_val`` (``+inf``/``-inf`` before any update)."""
        if self._min is None or self._max is None:
            shape: tuple[int, ...] = () if self.axis is None else (0,)
            lo, hi = torch.full(shape, math.inf), torch.full(shape, -math.inf)
        else:
            lo, hi = self._min.clone(), self._max.clone()
        return {
            "batches": torch.tensor(self._batches, dtype=torch.int64),
            "min_val": lo,
            "max_val": hi,
        }

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore ``batches``, ``min_val`` and ``max_val``; shapes must fit ``axis``."""
        batches = self._load_batches(state, self._KEYS)
        lo = state["min_val"].detach().to(torch.float32).clone()
        hi = state["max_val"].detach().to(device=lo.device, dtype=torch.float32).clone()
        if lo.shape != hi.shape or lo.dim() != (0 if self.axis is None else 1):
            raise ValueError(
                f"{self._label()}: state shapes {tuple(lo.shape)}/{tuple(hi.shape)} do not "
                f"fit axis={self.axis}"
            )
        if batches == 0:
            self._min = self._max = None
        else:
            if not bool(torch.isfinite(lo).all() & torch.isfinite(hi).all()):
                raise ValueError(f"{self._label()}: state holds a non-finite range")
            self._min, self._max = lo, hi
        self._batches = batches

    def _adopt(self, lo: torch.Tensor, hi: torch.Tensor, batches: int) -> None:
        self._min, self._max, self._batches = lo.clone(), hi.clone(), batches

    def _prepare_merge(self, other: Observer) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Validate ``other``; return its stats on our device, or None if nothing to combine."""
        self._check_compatible(other)
        assert isinstance(other, _RangeObserver)
        if other._min is None or other._max is None:
            return None
        if self._min is None or self._max is None:
            self._adopt(other._min, other._max, self._batches + other._batches)
            return None
        if other._min.shape != self._min.shape:
            raise ValueError(
                f"{self._label()}: cannot merge {other._min.numel()} channels into "
                f"{self._min.numel()}"
            )
        device = self._min.device
        return other._min.to(device), other._max.to(device)


class MinMaxObserver(_RangeObserver):
    """Running minimum and maximum (per-tensor, or per-channel with ``axis``)."""

    kind = "minmax"

    def __init__(self, *, name: str = "", axis: int | None = None, **options: Any) -> None:
        """Create a min/max observer; see :class:`Observer`."""
        super().__init__(name=name, axis=axis, **options)

    def _observe(
        self, data: torch.Tensor, batch_min: torch.Tensor, batch_max: torch.Tensor
    ) -> None:
        self._check_channels(batch_min)
        if self._min is None or self._max is None:
            self._min, self._max = batch_min.clone(), batch_max.clone()
            return
        device = batch_min.device
        self._min = torch.minimum(self._min.to(device), batch_min)
        self._max = torch.maximum(self._max.to(device), batch_max)

    def merge(self, other: Observer) -> None:
        """Min of the minima and max of the maxima; batch counts add up."""
        stats = self._prepare_merge(other)
        if stats is None:
            return
        assert self._min is not None and self._max is not None
        self._min = torch.minimum(self._min, stats[0])
        self._max = torch.maximum(self._max, stats[1])
        self._batches += other.batches

    def _all_reduce(self, group: Any) -> None:
        device = _comm_device(group)
        lo, hi = _local_extremes(self, device, group)
        if lo is None or hi is None:
            self._batches = int(
                _all_reduce(_batches_tensor(self, device), dist.ReduceOp.SUM, group)
            )
            return
        _all_reduce(lo, dist.ReduceOp.MIN, group)
        _all_reduce(hi, dist.ReduceOp.MAX, group)
        batches = int(_all_reduce(_batches_tensor(self, device), dist.ReduceOp.SUM, group))
        home = self._min.device if self._min is not None else device
        if batches == 0 or not bool(torch.isfinite(lo).all()):
            self._min = self._max = None
        else:
            self._min, self._max = lo.to(home), hi.to(home)
        self._batches = batches


class MovingAverageObserver(_RangeObserver):
    """Exponential moving average of the per-batch minimum and maximum.

    ``running = running + averaging_constant * (batch - running)``; the first
    batch initialises the averages.  Merging (and all-reduce) averages the
    running values weighted by each observer's batch count.
    """

    kind = "moving_average"

    def __init__(
        self,
        *,
        name: str = "",
        axis: int | None = None,
        averaging_constant: float = 0.01,
        **options: Any,
    ) -> None:
        """Create the observer; ``0 < averaging_constant <= 1``."""
        super().__init__(name=name, axis=axis, **options)
        if not 0.0 < float(averaging_constant) <= 1.0:
            raise ValueError(
                f"{self._label()}: averaging_constant must be in (0, 1], got {averaging_constant}"
            )
        self.averaging_constant = float(averaging_constant)

    def _observe(
        self, data: torch.Tensor, batch_min: torch.Tensor, batch_max: torch.Tensor
    ) -> None:
        self._check_channels(batch_min)
        if self._min is None or self._max is None:
            self._min, self._max = batch_min.clone(), batch_max.clone()
            return
        device, c = batch_min.device, self.averaging_constant
        current_min, current_max = self._min.to(device), self._max.to(device)
        self._min = current_min + c * (batch_min - current_min)
        self._max = current_max + c * (batch_max - current_max)

    def merge(self, other: Observer) -> None:
        """Batch-count weighted average of the running minima and maxima."""
        stats = self._prepare_merge(other)
        if stats is None:
            return
        assert self._min is not None and self._max is not None
        mine, theirs = float(self._batches), float(other.batches)
        weight = theirs / (mine + theirs)
        self._min = self._min + weight * (stats[0] - self._min)
        self._max = self._max + weight * (stats[1] - self._max)
        self._batches += other.batches

    def _all_reduce(self, group: Any) -> None:
        device = _comm_device(group)
        lo, hi = _local_extremes(self, device, group, fill=0.0)
        batches_t = _batches_tensor(self, device)
        if lo is None or hi is None:
            self._batches = int(_all_reduce(batches_t, dist.ReduceOp.SUM, group))
            return
        weight = float(self._batches) if self._min is not None else 0.0
        lo_sum = _all_reduce((lo.double() * weight), dist.ReduceOp.SUM, group)
        hi_sum = _all_reduce((hi.double() * weight), dist.ReduceOp.SUM, group)
        batches = int(_all_reduce(batches_t, dist.ReduceOp.SUM, group))
        home = self._min.device if self._min is not None else device
        if batches == 0:
            self._min = self._max = None
        else:
            self._min = (lo_sum / batches).to(device=home, dtype=torch.float32)
            self._max = (hi_sum / batches).to(device=home, dtype=torch.float32)
        self._batches = batches


def _batches_tensor(observer: Observer, device: torch.device) -> torch.Tensor:
    return torch.tensor(observer.batches, dtype=torch.int64, device=device)


def _local_extremes(
    observer: _RangeObserver, device: torch.device, group: Any, fill: float | None = None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """This rank's (min, max) on ``device``, shaped like every rank's; None if none has data.

    Ranks without data contribute ``+inf``/``-inf`` (or ``fill`` when given).
    """
    if observer.axis is None:
        shape: tuple[int, ...] = ()
    else:
        local = None if observer._min is None else observer._min.numel()
        channels = _agree_channels(observer._label(), local, device, group)
        if channels is None:
            return None, None
        shape = (channels,)
    if observer._min is None or observer._max is None:
        lo = torch.full(shape, math.inf if fill is None else fill, device=device)
        hi = torch.full(shape, -math.inf if fill is None else fill, device=device)
        return lo, hi
    return observer._min.to(device).clone(), observer._max.to(device).clone()


class _HistogramObserver(Observer):
    """Per-tensor streaming histogram shared by percentile, mse and entropy."""

    _KEYS = ("batches", "histogram", "hist_range", "data_range")

    def __init__(
        self, *, name: str = "", axis: int | None = None, bins: int = DEFAULT_BINS, **options: Any
    ) -> None:
        super().__init__(name=name, axis=axis, **options)
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 8:
            raise ValueError(f"{self._label()}: bins must be an integer >= 8, got {bins!r}")
        self.bins = bins
        self._counts: torch.Tensor | None = None
        self._lo = self._hi = 0.0  # histogram range (always contains 0)
        self._dmin, self._dmax = math.inf, -math.inf  # exact data range

    # -- observing ----------------------------------------------------------

    def _observe(
        self, data: torch.Tensor, batch_min: torch.Tensor, batch_max: torch.Tensor
    ) -> None:
        bmin, bmax = (float(v) for v in torch.stack([batch_min, batch_max]).tolist())
        device = data.device
        if self._counts is None:
            self._counts = torch.zeros(self.bins, dtype=_count_dtype(device), device=device)
            self._lo, self._hi = _f32_down(min(bmin, 0.0)), _f32_up(max(bmax, 0.0))
        else:
            self._counts = self._counts.to(device=device, dtype=_count_dtype(device))
            self._counts, self._lo, self._hi = _grow(self._counts, self._lo, self._hi, bmin, bmax)
        if self._hi > self._lo:
            counts = torch.histc(data, bins=self.bins, min=self._lo, max=self._hi)
            self._counts += counts.to(self._counts.dtype)
        else:  # everything so far is exactly zero: a point mass in bin 0
            self._counts[0] += data.numel()
        self._dmin, self._dmax = min(self._dmin, bmin), max(self._dmax, bmax)

    # -- results ------------------------------------------------------------

    def observed_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The exact ``(min, max)`` of all observed values."""
        if self._counts is None:
            raise RuntimeError(f"{self._label()}: no batch observed yet")
        return torch.tensor(self._dmin), torch.tensor(self._dmax)

    def histogram(self) -> tuple[torch.Tensor, float, float]:
        """The accumulated ``(counts, lo, hi)``; counts are a copy."""
        if self._counts is None:
            raise RuntimeError(f"{self._label()}: no batch observed yet")
        return self._counts.clone(), self._lo, self._hi

    def _range(
        self, *, bits: int, signed: bool, symmetric: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self._counts is None:
            raise RuntimeError(f"{self._label()}: no batch observed yet")
        counts = self._counts.detach().to("cpu", torch.float64).numpy()
        if self._hi <= self._lo:
            lo = hi = 0.0
        else:
            lo, hi = self._clip_range(counts, bits=bits, symmetric=symmetric)
        if symmetric:
            amax = min(max(-lo, hi), max(-self._dmin, self._dmax))
            lo, hi = -amax, amax
        else:
            lo, hi = max(lo, self._dmin), min(hi, self._dmax)
            lo, hi = min(lo, hi), max(lo, hi)
        device = self._counts.device
        return (
            torch.tensor(lo, dtype=torch.float32, device=device),
            torch.tensor(hi, dtype=torch.float32, device=device),
        )

    def _clip_range(
        self, counts: npt.NDArray[np.float64], *, bits: int, symmetric: bool
    ) -> tuple[float, float]:
        raise NotImplementedError

    # -- state --------------------------------------------------------------

    def state(self) -> dict[str, torch.Tensor]:
        """``batches``, ``histogram`` [bins], ``hist_range`` and ``data_range`` (float64 [2])."""
        if self._counts is None:
            counts = torch.zeros(self.bins, dtype=torch.float64)
            hist_range = torch.tensor([math.inf, -math.inf], dtype=torch.float64)
        else:
            counts = self._counts.clone()
            hist_range = torch.tensor([self._lo, self._hi], dtype=torch.float64)
        return {
            "batches": torch.tensor(self._batches, dtype=torch.int64),
            "histogram": counts,
            "hist_range": hist_range,
            "data_range": torch.tensor([self._dmin, self._dmax], dtype=torch.float64),
        }

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the histogram; its bin count must equal ``bins``."""
        batches = self._load_batches(state, self._KEYS)
        counts = state["histogram"].detach()
        if counts.shape != (self.bins,):
            raise ValueError(
                f"{self._label()}: state histogram has shape {tuple(counts.shape)}, "
                f"expected ({self.bins},)"
            )
        hist_lo, hist_hi = (float(v) for v in state["hist_range"].tolist())
        data_lo, data_hi = (float(v) for v in state["data_range"].tolist())
        if batches == 0:
            self._counts, self._lo, self._hi = None, 0.0, 0.0
            self._dmin, self._dmax = math.inf, -math.inf
        else:
            values = (hist_lo, hist_hi, data_lo, data_hi)
            if not all(math.isfinite(v) for v in values) or not (
                hist_lo <= min(data_lo, 0.0) and hist_hi >= max(data_hi, 0.0)
            ):
                raise ValueError(f"{self._label()}: inconsistent ranges in state")
            device = counts.device
            self._counts = counts.to(_count_dtype(device)).clone()
            self._lo, self._hi, self._dmin, self._dmax = values
        self._batches = batches

    def merge(self, other: Observer) -> None:
        """Re-bin both histograms to their common range and add them."""
        self._check_compatible(other)
        assert isinstance(other, _HistogramObserver)
        if other.bins != self.bins:
            raise ValueError(
                f"{self._label()}: cannot merge histograms with {other.bins} and {self.bins} bins"
            )
        if other._counts is None:
            return
        if self._counts is None:
            self._counts = other._counts.clone()
            self._lo, self._hi, self._dmin, self._dmax = (
                other._lo,
                other._hi,
                other._dmin,
                other._dmax,
            )
            self._batches += other._batches
            return
        lo, hi = min(self._lo, other._lo), max(self._hi, other._hi)
        theirs = other._counts.to(device=self._counts.device, dtype=self._counts.dtype)
        self._counts = _rebin(self._counts, self._lo, self._hi, lo, hi) + _rebin(
            theirs, other._lo, other._hi, lo, hi
        )
        self._lo, self._hi = lo, hi
        self._dmin, self._dmax = min(self._dmin, other._dmin), max(self._dmax, other._dmax)
        self._batches += other._batches

    def _all_reduce(self, group: Any) -> None:
        device = _comm_device(group)
        sizes = torch.tensor([self.bins, -self.bins], dtype=torch.int64, device=device)
        largest, neg_smallest = _all_reduce(sizes, dist.ReduceOp.MAX, group).tolist()
        if largest != -neg_smallest:
            raise ValueError(f"{self._label()}: ranks use different histogram bin counts")
        empty = self._counts is None
        # One MIN all-reduce for both ends: maxima are negated.
        ranges = torch.tensor(
            [math.inf, math.inf, math.inf, math.inf]
            if empty
            else [self._lo, -self._hi, self._dmin, -self._dmax],
            dtype=torch.float64,
            device=device,
        )
        lo, neg_hi, dmin, neg_dmax = _all_reduce(ranges, dist.ReduceOp.MIN, group).tolist()
        batches = int(_all_reduce(_batches_tensor(self, device), dist.ReduceOp.SUM, group))
        if not math.isfinite(lo):  # no rank has data
            self._batches = batches
            return
        hi, dmax = -neg_hi, -neg_dmax
        if self._counts is None:
            local = torch.zeros(self.bins, dtype=torch.float64, device=device)
            home = device
        else:
            home = self._counts.device
            counts = self._counts.to(device=device, dtype=torch.float64)
            local = _rebin(counts, self._lo, self._hi, lo, hi)
        total = _all_reduce(local, dist.ReduceOp.SUM, group)
        self._counts = total.to(device=home, dtype=_count_dtype(home))
        self._lo, self._hi, self._dmin, self._dmax = lo, hi, dmin, dmax
        self._batches = batches


class PercentileObserver(_HistogramObserver):
    """Clips at a percentile of the observed values (from the streaming histogram).

    Symmetric quantization clips ``|x|`` at its ``percentile``-th percentile;
    affine quantization clips ``x`` to its ``[100 - percentile, percentile]``
    percentiles.
    """

    kind = "percentile"

    def __init__(
        self,
        *,
        name: str = "",
        axis: int | None = None,
        bins: int = DEFAULT_BINS,
        percentile: float = 99.99,
        **options: Any,
    ) -> None:
        """Create the observer; ``50 < percentile <= 100``."""
        super().__init__(name=name, axis=axis, bins=bins, **options)
        if not 50.0 < float(percentile) <= 100.0:
            raise ValueError(f"{self._label()}: percentile must be in (50, 100], got {percentile}")
        self.percentile = float(percentile)

    def _clip_range(
        self, counts: npt.NDArray[np.float64], *, bits: int, symmetric: bool
    ) -> tuple[float, float]:
        q = self.percentile / 100.0
        if symmetric:
            abs_counts, extent = _abs_histogram(counts, self._lo, self._hi)
            amax = _quantile(abs_counts, 0.0, extent, q)
            return -amax, amax
        low = _quantile(counts, self._lo, self._hi, 1.0 - q)
        high = _quantile(counts, self._lo, self._hi, q)
        return min(low, 0.0), max(high, 0.0)


class MseObserver(_HistogramObserver):
    """Clipping range minimising the expected quantization MSE on the histogram.

    Error of a candidate range = ``n_inside * delta**2 / 12`` (rounding noise,
    ``delta`` the quantization step for ``bits``) + the squared distance of
    clipped values to the range ends (uniform density inside each bin).
    Symmetric: thresholds at every bin edge of the ``|x|`` histogram; affine:
    pairs of bin edges on either side of 0 (at most 512 per side).
    """

    kind = "mse"

    def _clip_range(
        self, counts: npt.NDArray[np.float64], *, bits: int, symmetric: bool
    ) -> tuple[float, float]:
        if symmetric:
            abs_counts, extent = _abs_histogram(counts, self._lo, self._hi)
            amax = _mse_symmetric(abs_counts, extent, 2 ** (bits - 1) - 1)
            return -amax, amax
        return _mse_affine(counts, self._lo, self._hi, 2**bits - 1)


class EntropyObserver(_HistogramObserver):
    """TensorRT-style KL-divergence (entropy) calibration on the ``|x|`` histogram.

    The number of quantization levels compared is ``2**(bits-1)`` (``2**bits``
    for affine quantization of one-signed data).  When the histogram has no
    more bins than levels, nothing is clipped.  Affine ranges are the symmetric
    threshold intersected with the data range.
    """

    kind = "entropy"

    def _clip_range(
        self, counts: npt.NDArray[np.float64], *, bits: int, symmetric: bool
    ) -> tuple[float, float]:
        abs_counts, extent = _abs_histogram(counts, self._lo, self._hi)
        one_signed = self._dmin >= 0.0 or self._dmax <= 0.0
        levels = 2**bits if (one_signed and not symmetric) else 2 ** (bits - 1)
        amax = _kl_threshold(abs_counts, extent, levels)
        return -amax, amax


# --------------------------------------------------------------------------- #
# Factory and distributed reduction
# --------------------------------------------------------------------------- #

_REGISTRY: dict[str, type[Observer]] = {
    cls.kind: cls
    for cls in (
        MinMaxObserver,
        MovingAverageObserver,
        PercentileObserver,
        MseObserver,
        EntropyObserver,
    )
}

#: The observer kinds :func:`make_observer` accepts.
OBSERVER_KINDS: tuple[str, ...] = tuple(_REGISTRY)


def make_observer(kind: str, **kwargs: Any) -> Observer:
    """Create an observer of ``kind`` (one of :data:`OBSERVER_KINDS`) with ``kwargs``.

    Raises :class:`ValueError` listing the kinds when ``kind`` is unknown and
    :class:`TypeError` for options the kind does not take.
    """
    try:
        cls = _REGISTRY[kind]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown observer kind {kind!r}; expected one of {', '.join(OBSERVER_KINDS)}"
        ) from None
    return cls(**kwargs)


def all_reduce_observer(observer: Observer, group: Any = None) -> None:
    """Reduce ``observer``'s statistics across the ranks of ``group``.

    Afterwards every rank holds identical statistics (and so identical
    qparams).  Min/max: all-reduce MIN/MAX; moving averages: batch-weighted
    mean; histograms: agree on a common range (MIN/MAX), re-bin locally, SUM.
    Batch counts are summed.  Ranks that saw no data take part and contribute
    nothing.  A no-op when :mod:`torch.distributed` is not initialised.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    with torch.no_grad():
        observer._all_reduce(group)
