"""Passes and pipelines: named, verifiable transformations of a Graph."""

from acekit.passes.base import Pass, PassContractError, PassResult
from acekit.passes.pipeline import (
    VERIFY_ENV,
    PassBugError,
    PassError,
    PassFailedError,
    Pipeline,
    PipelineResult,
    UnknownPassError,
)
from acekit.passes.spec import PipelineSpecError, parse_spec

__all__ = [
    "VERIFY_ENV",
    "Pass",
    "PassBugError",
    "PassContractError",
    "PassError",
    "PassFailedError",
    "PassResult",
    "Pipeline",
    "PipelineResult",
    "PipelineSpecError",
    "UnknownPassError",
    "parse_spec",
]
