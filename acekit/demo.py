"""``acekit demo``: the kernel end to end on torchvision's resnet18.

Parses the model with the FX parser plugin, cleans it with the ``cleanup`` preset,
checks that the module generated from the graph gives the original's outputs, and writes
the graph (text, picture, lossless save) with a run log. The quantization job replaces
this demo once the PTQ plugin and the ONNX Runtime target land.
"""

from __future__ import annotations

import time
from pathlib import Path

import attrs
import torch

from acekit.ir import save_graph
from acekit.logging import get_logger, run_logging
from acekit.passes import Pipeline
from acekit.plugin import plugin_versions
from acekit.settings import Settings
from acekit.visualize import render

log = get_logger(__name__)


@attrs.frozen
class DemoReport:
    """What the demo measured and wrote."""

    model: str
    parsed_nodes: int
    cleaned_nodes: int
    removed_by_pass: tuple[tuple[str, int], ...]
    max_abs_diff: float
    output_scale: float
    seconds: float
    files: tuple[Path, ...]

    def format(self) -> str:
        """The report as the lines printed at the end of the demo."""
        removed = ", ".join(f"{name}: {count}" for name, count in self.removed_by_pass if count)
        lines = [
            "",
            f"acekit demo report: {self.model}",
            f"  nodes parsed ........... {self.parsed_nodes}",
            f"  nodes after cleanup .... {self.cleaned_nodes} (removed {removed or 'none'})",
            f"  max |original - acekit|  {self.max_abs_diff:.2e} "
            f"(output scale {self.output_scale:.2f})",
            f"  parse + cleanup ........ {self.seconds:.2f} s",
            "  files written:",
            *(f"    {path}" for path in self.files),
        ]
        return "\n".join(lines)


def run_demo(out_dir: Path = Path("out/demo"), image_size: int = 224) -> DemoReport:
    """Run the demo, writing into ``out_dir``; returns the report."""
    import torchvision

    from acekit.api import parse

    out_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings()
    with run_logging(out_dir / "logs", extra_versions=plugin_versions()) as run:
        run.log_block(settings.format())
        torch.manual_seed(0)
        model = torchvision.models.resnet18().eval()
        x = torch.randn(1, 3, image_size, image_size)
        started = time.perf_counter()
        graph = parse(model, (x,))
        parsed = len(graph)
        result = Pipeline.from_spec("cleanup").run(graph)
        seconds = time.perf_counter() - started
        graph = result.graph
        with torch.no_grad():
            expected = model(x)
            actual = graph.to_module()(x)
        diff = float((expected - actual).abs().max())
        scale = float(expected.abs().max())
        log.info(f"Generated module matches the original: max abs diff {diff:.2e}")
        text_path = out_dir / "resnet18.graph.txt"
        text_path.write_text(str(graph) + "\n")
        files = (
            text_path,
            save_graph(graph, out_dir / "resnet18.acekit"),
            render(graph, out_dir / "resnet18.svg"),
            run.path,
        )
    removed = tuple(
        (name, int(pass_result.stats.get("removed", 0))) for name, pass_result in result.results
    )
    return DemoReport(
        "torchvision resnet18", parsed, len(graph), removed, diff, scale, seconds, files
    )
