"""The architecture picture in docs/architecture.md is the code's own import graph, and the layers hold."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_drawing():
    spec = importlib.util.spec_from_file_location("architecture", ROOT / "docs" / "architecture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_architecture_page_shows_the_current_import_graph():
    drawing = load_drawing()
    assert drawing.mermaid() in (ROOT / "docs" / "architecture.md").read_text(), "regenerate with: python docs/architecture.py"


def test_no_module_imports_from_a_layer_above_its_own():
    drawing = load_drawing()
    layer_of = {node: index for index, (_, nodes) in enumerate(drawing.LAYERS) for node in nodes}
    upward = {(source, target) for source, target in drawing.edges() if layer_of[target] < layer_of[source]}
    assert not upward, f"imports from a layer above: {sorted(upward)}"
