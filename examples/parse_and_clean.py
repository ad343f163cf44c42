"""Parse a torchvision model into acekit's IR, clean it, and use the generated module.

Run: ``.venv/bin/python examples/parse_and_clean.py``
"""

from __future__ import annotations

import torch
import torchvision

import acekit
from acekit.passes import Pipeline


def main() -> None:
    """Parse mobilenet_v2, run the cleanup preset, compare outputs, print the graph's head."""
    model = torchvision.models.mobilenet_v2().eval()
    x = torch.randn(1, 3, 96, 96)
    graph = acekit.parse(model, (x,))
    result = Pipeline.from_spec("cleanup").run(graph)
    for name, pass_result in result.results:
        print(f"{name:>16}: {dict(pass_result.stats)}")
    module = result.graph.to_module()
    with torch.no_grad():
        diff = (module(x) - model(x)).abs().max().item()
    print(f"max abs difference to the original: {diff:.2e}")
    print("\n".join(str(result.graph).splitlines()[:12]))


if __name__ == "__main__":
    main()
