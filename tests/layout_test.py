# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The package layout: imports point one way and form no cycle.

Layers, lowest first:
  shared     routing_jax.{cli, common_types, config_sections, errors,
             multihost, storage_errors, xla_flags}:
             import no other routing_jax module (cli: how every CLI,
             datasets.build included, turns a user's mistake into one line)
  nn, data   routing_jax.nn.*, routing_jax.data.*: import only the shared
             modules and their own subpackage
  training   routing_jax.training.*: may also import nn and data
  programs   the command-line entry points at the top level (main, evaluate,
             sample, dryrun) and their helpers (inference, cli_checks,
             distributed):
             nothing imports them but each other

Reads the sources with `ast` (every import, also those inside functions);
imports nothing, so it runs in well under a second.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "routing_jax"

SHARED = {
    "routing_jax.cli",
    "routing_jax.common_types",
    "routing_jax.config_sections",
    "routing_jax.errors",
    "routing_jax.multihost",
    "routing_jax.storage_errors",
    "routing_jax.xla_flags",
}
PROGRAMS = {
    "routing_jax.cli_checks",
    "routing_jax.distributed",
    "routing_jax.main",
    "routing_jax.evaluate",
    "routing_jax.sample",
    "routing_jax.dryrun",
    "routing_jax.inference",
}
# What each layer may import besides itself.
ALLOWED = {
    "shared": set(),
    "nn": {"shared"},
    "data": {"shared"},
    "training": {"shared", "nn", "data"},
    "programs": {"shared", "nn", "data", "training", "package"},
    # routing_jax/__init__.py re-exports the model and `load`.
    "package": {"nn", "training"},
}


def _module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(ROOT).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts.pop()
  return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
  return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> str:
  if module == "routing_jax":
    return "package"
  if module in SHARED:
    return "shared"
  if module in PROGRAMS:
    return "programs"
  sub = module.split(".")[1]
  if sub in ("nn", "data", "training"):
    return sub
  raise AssertionError(f"{module} is in no layer: add it to layout_test.py")


def _imports(path: pathlib.Path, modules) -> set[str]:
  """The routing_jax modules `path` imports (packages resolved to modules)."""
  out = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      # `from pkg import mod` depends on the module pkg.mod (pkg's __init__
      # runs first, as for any import below pkg); `from mod import name` on
      # mod.
      names = [f"{node.module}.{alias.name}" for alias in node.names]
      if not all(n in modules for n in names):
        names.append(node.module)
    elif isinstance(node, ast.ImportFrom):
      raise AssertionError(f"{path}: relative import; use absolute ones")
    else:
      continue
    out.update(n for n in names if n in modules)
  return out


def _graph() -> dict[str, set[str]]:
  modules = _modules()
  graph = {}
  for name, path in modules.items():
    deps = _imports(path, modules)
    # A package's __init__ runs before its modules: importing a.b.c also
    # imports a and a.b, but those edges are implied, not written.
    graph[name] = {d for d in deps if d != name}
  return graph


def test_every_module_is_in_a_layer():
  for name in _modules():
    _layer(name)


def test_imports_point_one_way():
  wrong = []
  for name, deps in _graph().items():
    layer = _layer(name)
    for dep in sorted(deps):
      dep_layer = _layer(dep)
      if dep_layer != layer and dep_layer not in ALLOWED[layer]:
        wrong.append(f"{name} ({layer}) imports {dep} ({dep_layer})")
  assert not wrong, "\n".join(wrong)


def _find_cycles(graph: dict[str, set[str]]) -> list[str]:
  """Every cycle a depth-first search meets, as "a -> b -> a"."""
  cycles = []
  state = {}  # 1: on the current path, 2: done.
  path = []

  def visit(node):
    state[node] = 1
    path.append(node)
    for dep in sorted(graph[node]):
      if state.get(dep) == 1:
        cycles.append(" -> ".join(path[path.index(dep) :] + [dep]))
      elif dep not in state:
        visit(dep)
    path.pop()
    state[node] = 2

  for node in sorted(graph):
    if node not in state:
      visit(node)
  return cycles


def test_no_import_cycles():
  cycles = _find_cycles(_graph())
  assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize(
    "source,expected",
    [
        ("from routing_jax.nn import model\n", {"routing_jax.nn.model"}),
        (
            "def f():\n  import routing_jax.training.train\n",
            {"routing_jax.training.train"},
        ),
        (
            "from routing_jax.nn.model import TransformerLM\n",
            {"routing_jax.nn.model"},
        ),
        ("from routing_jax import generate\n", {"routing_jax"}),
    ],
)
def test_imports_are_found(tmp_path, source, expected):
  path = tmp_path / "m.py"
  path.write_text(source)
  assert _imports(path, _modules()) == expected


def test_a_cycle_is_found():
  graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
  assert _find_cycles(graph) == ["a -> b -> c -> a"]


def test_experiments_is_not_installed_as_a_top_level_package(tmp_path):
  """The configs run from a checkout; installing them as a package named
  `experiments` would shadow any user's own module of that name."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top

  outside = subprocess.run(
      [sys.executable, "-c", "import experiments"],
      cwd=tmp_path,
      capture_output=True,
      text=True,
      check=False,
  )
  assert outside.returncode != 0
  assert "No module named 'experiments'" in outside.stderr
