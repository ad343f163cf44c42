"""A run's seed: the process's random generators seeded for the run, then given back.

``settings.training.random_seed`` makes two runs with the same inputs give the same
model (a shuffling ``DataLoader`` without its own generator draws from torch's global
one, tracing may run dropout). The generators belong to the caller, though: what the
caller had drawn before ``compile`` must continue afterwards as if no run had happened.
So the run seeds them on entry and restores the caller's states when it ends.

The generators are process-wide: runs in several threads share them. The states are
saved by the first run in and restored by the last one out, so concurrent runs cannot
leave a seeded state behind; for data that shuffles, give the ``DataLoader`` its own
``torch.Generator`` to make concurrent runs reproducible too.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Iterator
from typing import Any

import torch

_lock = threading.Lock()
_depth = 0
_saved: dict[str, Any] = {}


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed ``random``, numpy and torch for the block; restore the caller's states after."""
    global _depth
    with _lock:
        if _depth == 0:
            _saved.update(_capture())
        _depth += 1
        _seed_all(seed)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _restore(_saved)
                _saved.clear()


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:  # numpy is optional
        return None
    return numpy


def _capture() -> dict[str, Any]:
    states: dict[str, Any] = {"random": random.getstate(), "torch": torch.get_rng_state()}
    numpy = _numpy()
    if numpy is not None:
        states["numpy"] = numpy.random.get_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _seed_all(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    numpy = _numpy()
    if numpy is not None:
        numpy.random.seed(seed)


def _restore(states: dict[str, Any]) -> None:
    random.setstate(states["random"])
    torch.set_rng_state(states["torch"])
    if "numpy" in states:
        _numpy().random.set_state(states["numpy"])
    if "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])
