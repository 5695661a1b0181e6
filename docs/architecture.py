"""Draw the package's layers from its imports, as a Mermaid graph for docs/architecture.md.

    python docs/architecture.py     # prints the graph; paste it into docs/architecture.md

Each node is one concept's home (a module or a folder); an arrow means "imports" (an arrow implied by a
longer path is left out). docs/architecture.md shows the output, so the picture is the code's own import graph.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "persona_agents_pipeline"

# Concept homes, listed top layer first: entry points, Dagster, service, infrastructure, domain.
LAYERS: list[tuple[str, dict[str, str]]] = [
    ("entry points", {"cli": "cli/ (command line)", "python_api": "python_api.py (application code)",
                      "demo": "demo.py", "in_process_runs": "in_process_runs.py"}),
    ("Dagster layer", {"definitions": "definitions.py", "defs": "defs/ (assets, checks, sensors, schedules)"}),
    ("service", {"reconcile": "reconcile.py (plan, apply)", "detection": "detection.py (gone agents, orphans)",
                 "agent_status": "agent_status.py (one status model)",
                 "provisioning": "provisioning.py (one service)", "batch": "batch.py (batches, Ctrl-C)",
                 "exactly_once": "exactly_once.py (exactly one agent)"}),
    ("infrastructure", {"client_factory": "client_factory.py", "elevenlabs": "elevenlabs/ (client, shared budget)",
                        "store": "store.py, migrations/ (queries, claims, change log)", "config": "config.py (settings)",
                        "sandbox": "sandbox/ (local ElevenLabs)"}),
    ("domain (no I/O)", {"drift": "drift.py", "models": "models.py (the persona row)",
                         "agent_comparison": "agent_comparison.py (remote agent vs desired payload)",
                         "outcomes": "outcomes.py (what an operation did)",
                         "voice_policy": "voice_policy.py (voice, settings, prompt, payload)",
                         "identity": "identity.py (identity tags, installation ids)",
                         "persona_validation": "persona_validation.py (persona checks)"}),
]
# Modules that share a home with another.
ALIASES = {"migrations": "store", "schema_errors": "store", "database_identity": "store", "installation": "store",
           "engines": "store", "display": "cli", "demo_data": "demo", "setting_values": "config"}


def home(module: str) -> str | None:
    """The concept home of a module path inside the package ('defs.assets' -> 'defs')."""
    first = module.split(".")[0]
    first = ALIASES.get(first, first)
    return first if any(first in nodes for _, nodes in LAYERS) else None


def imports(path: Path) -> set[str]:
    """Package-relative modules that `path` imports (absolute or relative imports)."""
    relative_to = path.relative_to(PACKAGE).with_suffix("").parts
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(relative_to[: len(relative_to) - node.level])
                target = ".".join(base + ([node.module] if node.module else []))
                names = [target] if node.module else [".".join(base + [a.name]) for a in node.names]
                found.update(names)
            elif node.module and node.module.startswith(PACKAGE.name + "."):
                found.add(node.module.split(".", 1)[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".", 1)[1] for a in node.names if a.name.startswith(PACKAGE.name + "."))
    return {name for name in found if name}


def edges() -> set[tuple[str, str]]:
    result: set[tuple[str, str]] = set()
    for path in PACKAGE.rglob("*.py"):
        source = home(".".join(path.relative_to(PACKAGE).with_suffix("").parts))
        for target in map(home, imports(path)):
            if source and target and source != target:
                result.add((source, target))
    return result


def without_implied(graph: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Leave out an arrow a -> c where a longer path a -> ... -> c exists: the picture stays small and
    still says what reaches what."""
    def reaches(start: str, goal: str, skip: tuple[str, str]) -> bool:
        seen, todo = {start}, [start]
        while todo:
            node = todo.pop()
            for source, target in graph:
                if source == node and (source, target) != skip and target not in seen:
                    if target == goal:
                        return True
                    seen.add(target)
                    todo.append(target)
        return False

    return {edge for edge in graph if not reaches(edge[0], edge[1], skip=edge)}


def mermaid() -> str:
    lines = ["flowchart TB"]
    for index, (layer, nodes) in enumerate(LAYERS):
        lines.append(f'  subgraph L{index}["{layer}"]')
        lines += [f'    {name}["{label}"]' for name, label in nodes.items()]
        lines.append("  end")
    lines += [f"  {source} --> {target}" for source, target in sorted(without_implied(edges()))]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(mermaid() + "\n")
