"""The package's shape: the import graph of ``bench/`` has no cycle and no import that runs
from a lower stage of the pipeline up into a higher one.

Every ``import`` statement counts, wherever it stands (module level, inside a function, under
``if TYPE_CHECKING``): an import hidden in a function still means that a piece sits in the
wrong room. The stages, lowest first, follow the pipeline (dataset -> codec -> metrics and tasks
-> records -> curves -> report / check); a module may import its own stage and those below.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bench"

STAGES: list[tuple[str, list[str]]] = [
    (
        "foundation",
        [
            "bench.errors", "bench.types", "bench.registry", "bench.config", "bench.download",
            "bench.archives", "bench.checkpoints", "bench.weights", "bench.lock", "bench.memory",
            "bench.provenance", "bench.images", "bench.records",
        ],
    ),
    ("inputs, scores and training", ["bench.datasets", "bench.metrics", "bench.tasks",
                                     "bench.training"]),
    ("codecs", ["bench.codecs"]),
    ("running", ["bench.search", "bench.forkserver", "bench.executors", "bench.ray_executor",
                 "bench.store",
                 "bench.manifest", "bench.runner", "bench.task_training"]),
    ("outputs", ["bench.curves", "bench.interpolate", "bench.bjontegaard", "bench.anchor",
                 "bench.references", "bench.export", "bench.outputs",
                 "bench.report", "bench.rules", "bench.check"]),
    ("interfaces", ["bench.api", "bench.cli", "bench"]),
]  # fmt: skip


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported(module: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The bench modules that ``module`` imports, resolved to the deepest module named."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def deepest(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        for name in names:
            target = deepest(name) if name.split(".")[0] == "bench" else None
            if target is not None and target != module:
                yield target


def graph() -> dict[str, set[str]]:
    known = modules()
    return {module: set(imported(module, path, known)) for module, path in known.items()}


def stage_of(module: str) -> int | None:
    """The index of the stage whose longest prefix names ``module``."""
    best: tuple[int, int] | None = None
    for index, (_, prefixes) in enumerate(STAGES):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (
                best is None or len(prefix) > best[1]
            ):
                best = (index, len(prefix))
    return None if best is None else best[0]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return found


def test_the_import_graph_has_no_cycle():
    assert cycles(graph()) == []


def test_no_module_imports_a_later_stage():
    upward = [
        f"{module} ({STAGES[stage_of(module)][0]}) imports {target} ({STAGES[stage_of(target)][0]})"  # type: ignore[index]
        for module, targets in sorted(graph().items())
        for target in sorted(targets)
        if stage_of(module) is not None
        and stage_of(target) is not None
        and stage_of(target) > stage_of(module)  # type: ignore[operator]
    ]
    assert upward == []


def test_every_module_has_a_stage():
    assert [module for module in modules() if stage_of(module) is None] == []


def test_the_checks_find_what_they_look_for():
    # A cycle of three and an upward edge in a made-up graph, so that the tests above can fail.
    made_up = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(made_up) == [["a", "b", "c"]]
    assert stage_of("bench.codecs.learned.gan.codec") == 2
    assert stage_of("bench.runner") > stage_of("bench.codecs")  # type: ignore[operator]
    assert stage_of("bench") == len(STAGES) - 1
