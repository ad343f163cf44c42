"""The zoo sweep: every model through parse -> compile -> export -> ORT (see harness.py).

All cases are ``slow`` (``make slow``; each result is also appended to zoo-results.jsonl
for ``python -m tests.zoo.report render``). ``make test`` runs a rotating sample: one
small model per source, chosen by the date.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.zoo.catalogue import SMALL, SOURCES, all_cases, rotating_sample
from tests.zoo.harness import Case, run_case
from tests.zoo.report import record

pytest.importorskip("torchvision")
pytest.importorskip("timm")
pytest.importorskip("transformers")


def _check(case: Case, *, keep: bool) -> None:
    outcome = run_case(case)
    if keep:
        record(outcome)
    assert outcome.stage in ("pass", "expected"), (
        f"{case.source}/{case.name} failed at {outcome.stage}: {outcome.error}\n{outcome.trace}"
    )


#: Models whose compile and export peak at 10 GB or more (ViT-L: 10.7 GB, measured):
#: marked ``large``, they run one after another (a machine-wide lock, tests/conftest.py),
#: so that two never share the machine's memory.
LARGE = {"vit_h_14", "vit_l_16", "vit_l_32"}


def _params(cases: list[Case]) -> list[Any]:
    return [
        pytest.param(
            case,
            id=f"{case.source}/{case.name}",
            marks=[pytest.mark.large] if case.name in LARGE else [],
        )
        for case in cases
    ]


@pytest.mark.slow
@pytest.mark.parametrize("case", _params(all_cases()))
def test_zoo_model(case: Case) -> None:
    _check(case, keep=True)


@pytest.mark.parametrize("source, name", rotating_sample(), ids=lambda v: str(v))
def test_rotating_sample(source: str, name: str) -> None:
    (case,) = [c for c in SOURCES[source]() if c.name == name]
    _check(case, keep=False)


def test_sample_models_are_in_the_zoo() -> None:
    for source, names in SMALL.items():
        assert set(names) <= {c.name for c in SOURCES[source]()}
