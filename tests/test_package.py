"""The package's shape: imports flow one way, and every command follows one convention."""

from __future__ import annotations

import ast
import importlib
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "modellens_jax"

# The commands: python -m modellens_jax.<name>; those that take --config (and overrides).
COMMANDS = ("prepare", "embed", "train", "evaluate", "backtest", "ablate", "members", "bench",
            "sweep", "main", "export", "recommend", "score", "serve", "serve_http", "atlas",
            "loadtest", "update", "update_backtest")  # fmt: skip
CONFIG_COMMANDS = ("prepare", "train", "backtest", "ablate", "members", "bench", "main", "update",
                   "update_backtest")  # fmt: skip
# The modules that may import the training loop: the commands that train.
TRAINERS = {"modellens_jax.main", "modellens_jax.backtest", "modellens_jax.experiments.ablate",
            "modellens_jax.update", "modellens_jax.update_backtest"}  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Every package module -> the package modules it imports anywhere (function bodies too)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                base = node.module
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    deps.add(full if full in modules else base)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as a list of modules (first == last), else None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                return [*stack[stack.index(v) :], v]
            if v not in state and (found := visit(v)):
                return found
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(graph):
        if u not in state and (found := visit(u)):
            return found
    return None


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle_and_only_trainers_import_train():
    graph = import_graph()
    shims = {m for m in graph if m.count(".") == 1 and len(graph[m]) == 1}  # python -m aliases
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    importers = {m for m, deps in graph.items() if "modellens_jax.train" in deps}
    assert importers - shims <= TRAINERS, sorted(importers - TRAINERS)


@pytest.mark.parametrize("name", COMMANDS)
def test_command_convention(name, capsys):
    """--help lists the command's own flags with help text; a bad flag and (where the command
    takes a config) a config typo are one line on stderr and exit status 2."""
    if name == "sweep":  # the process supervisor lives in launch/, outside the package
        main = runpy.run_path(str(ROOT / "launch" / "sweep.py"), run_name="sweep_command")["main"]
    else:
        main = importlib.import_module(f"modellens_jax.{name}").main
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "flags:" in out and "--" in out.split("flags:", 1)[1]
    assert main(["--no_such_flag=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "no_such_flag" in err, err
    if name in CONFIG_COMMANDS:
        assert main(["--config.modle.dropout=0.1"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and "modle" in err, err
