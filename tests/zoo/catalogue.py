"""All zoo cases by source, and the fast rotating sample ``make test`` runs."""

from __future__ import annotations

import datetime
import random
from collections.abc import Callable

from tests.zoo import hf_models, timm_models, torchvision_models
from tests.zoo.harness import Case

#: Source name -> the function listing its cases.
SOURCES: dict[str, Callable[[], list[Case]]] = {
    "torchvision-classification": torchvision_models.classification,
    "torchvision-segmentation": torchvision_models.segmentation,
    "torchvision-detection": torchvision_models.detection,
    "timm": timm_models.cases,
    "huggingface": hf_models.cases,
}

#: Small models the rotating sample draws from (each compiles in a few seconds).
SMALL = {
    "torchvision-classification": ["resnet18", "mobilenet_v3_small", "squeezenet1_1", "vit_b_32"],
    "timm": ["resnet18", "mobilenetv3_small_050", "deit_tiny_patch16_224", "lcnet_050"],
    "huggingface": ["bert", "gpt2", "vit", "llama", "distilbert"],
}


def all_cases(sources: list[str] | None = None) -> list[Case]:
    """The cases of ``sources`` (all by default), in a stable order."""
    return [case for name in (sources or list(SOURCES)) for case in SOURCES[name]()]


def rotating_sample(day: datetime.date | None = None) -> list[tuple[str, str]]:
    """One small model per source, chosen by the date: each day tries other ones."""
    day = day or datetime.date.today()
    chooser = random.Random(day.toordinal())
    return [(source, chooser.choice(names)) for source, names in SMALL.items()]
