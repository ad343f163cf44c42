"""Graph pictures: clustered by subgraph path, with a .dot fallback without graphviz."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from acekit.fileio import OutputPathError
from acekit.ir import Granularity, QuantSpec
from acekit.visualize import graph_to_dot, render
from tests.ir_builders import vit_like_graph


def test_dot_source_clusters_nodes_by_module_path_and_shows_quantization() -> None:
    graph = vit_like_graph(blocks=2)
    weight = graph.value("encoder.layers.encoder_layer_0.ln_1.weight")
    weight.quant = QuantSpec(granularity=Granularity.PER_CHANNEL, axis=0)
    graph.value("gelu").quant = QuantSpec.skipped("sensitive")
    source = graph_to_dot(graph).source
    assert "cluster_VisionTransformer/encoder/layers/encoder_layer_1/self_attention" in source
    assert "encoder_layers_encoder_layer_0_ln_1\nlinear\nbatchx8x16" in source
    assert "weight: s8 per-channel(axis=0)" in source
    assert "float (skipped: sensitive)" in source
    # Parameters are folded into their readers' labels rather than drawn as boxes.
    assert '"encoder.layers.encoder_layer_0.ln_1.weight" [' not in source


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz 'dot' binary not installed")
def test_render_writes_svg(tmp_path: Path) -> None:
    path = render(vit_like_graph(blocks=1), tmp_path / "graph.svg")
    assert path == tmp_path / "graph.svg"
    assert path.read_text().lstrip().startswith("<?xml")
    with pytest.raises(OutputPathError, match="overwrite=True"):
        render(vit_like_graph(blocks=1), path, overwrite=False)


def test_render_falls_back_to_dot_source_without_graphviz(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    mine = tmp_path / "graph.dot"
    mine.write_text("the user's own file")
    path = render(vit_like_graph(blocks=1), tmp_path / "graph.svg")
    assert path == tmp_path / "graph.svg.dot"
    assert path.read_text().startswith("digraph VisionTransformer")
    assert not (tmp_path / "graph.svg").exists()
    assert mine.read_text() == "the user's own file"


def test_render_checks_its_path_like_export(tmp_path: Path) -> None:
    graph = vit_like_graph(blocks=1)
    with pytest.raises(OutputPathError, match="is a directory"):
        render(graph, tmp_path)
    with pytest.raises(OutputPathError, match="does not exist"):
        render(graph, tmp_path / "missing" / "graph.svg")
    (tmp_path / "graph.dot").write_text("old")
    with pytest.raises(OutputPathError, match="overwrite=True"):
        render(graph, tmp_path / "graph.dot", overwrite=False)
    assert (tmp_path / "graph.dot").read_text() == "old"
    assert render(graph, tmp_path / "graph.dot").read_text().startswith("digraph")
