"""Detectors: the parts that trace are quantized, the pre- and post-processing stays float.

torchvision's detectors take a list of images and end in NMS, which neither tracer
captures; their ``backbone`` (with the FPN) traces. The parse error names it, and the
remedy it gives (compile the backbone, put the QuantizedModule back) runs.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import acekit
from acekit_fx import FxParser, TraceFailedError

torchvision = pytest.importorskip("torchvision")


class Backbone(nn.Module):
    """Two convs: the traceable part."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = torch.relu(self.conv1(x))
        return {"0": features, "1": self.conv2(features)}


class Scorer(nn.Module):
    """Keeps the confident boxes: data-dependent, like a detector's post-processing."""

    def __init__(self) -> None:
        super().__init__()
        self.score = nn.Conv2d(4, 1, 1)

    def forward(self, features: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        scores = self.score(features["1"]).flatten(1)
        return [row[row > 0] for row in scores]


class TinyDetector(nn.Module):
    """Walks its images one by one, as torchvision's detectors do."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = Backbone()
        self.head = Scorer()

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        batch = torch.stack([image * 2 - 1 for image in images])
        return self.head(self.backbone(batch))


def test_untraceable_detector_names_the_parts_that_trace() -> None:
    model = TinyDetector().eval()
    with pytest.raises(TraceFailedError) as caught:
        acekit.parse(model, (torch.rand(1, 3, 16, 16),), parser=FxParser(fallback_to_export=False))
    error = caught.value
    assert error.traceable_parts == ("backbone",)
    assert "trace on their own: model.backbone." in str(error)
    assert "model.backbone = acekit.compile(model.backbone" in str(error)


def test_the_remedy_runs_the_detector_with_a_quantized_backbone() -> None:
    torch.manual_seed(0)
    model = TinyDetector().eval()
    images = torch.rand(4, 3, 16, 16)
    backbone_inputs = images * 2 - 1  # what the backbone receives
    with torch.no_grad():
        expected = model.backbone(backbone_inputs)
    qm = acekit.compile(
        model.backbone,
        example_inputs=(backbone_inputs[:1],),
        calibration_inputs=backbone_inputs,
        logs_dir=None,
    )
    model.backbone = qm
    with torch.no_grad():
        features = model.backbone(backbone_inputs)
        kept = model(images)  # the float post-processing runs on the quantized features
    assert features.keys() == expected.keys()
    for name in expected:
        noise = (features[name] - expected[name]).norm() / expected[name].norm()
        assert noise < 0.05, name
    assert len(kept) == 4


def test_torchvision_detector_error_points_at_torchvision_and_the_backbone() -> None:
    model = torchvision.models.get_model(
        "fasterrcnn_mobilenet_v3_large_320_fpn",
        weights=None,
        weights_backbone=None,
        num_classes=3,
        min_size=64,
        max_size=64,
    ).eval()
    with pytest.raises(TraceFailedError) as caught:
        acekit.parse(model, (torch.rand(1, 3, 64, 64),), parser=FxParser(fallback_to_export=False))
    error = caught.value
    # torchvision's own line (torchvision's path starts like torch's: it is still the user's).
    assert error.location is not None and "torchvision/models/detection/" in error.location
    assert error.traceable_parts == ("backbone",)
