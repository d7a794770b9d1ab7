# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The README's module example runs as written."""

import pathlib
import re


def _block(marker: str) -> str:
  text = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
  after = text.split(f"<!-- {marker} -->", 1)[1]
  return re.search(r"```\w*\n(.*?)```", after, re.S).group(1)


def test_readme_example_runs():
  namespace = {}
  exec(compile(_block("readme-example"), "README example", "exec"), namespace)
  # The example trained one step: the k-means state moved, no gradient did.
  import jax
  import numpy as np

  old = jax.tree.leaves(namespace["variables"]["kmeans"])
  new = jax.tree.leaves(namespace["new_kmeans"])
  assert any(not np.allclose(a, b) for a, b in zip(old, new))
  assert np.isfinite(float(namespace["loss"]))


def test_readme_load_example_runs_on_a_trained_run(tiny_run, capsys):
  workdir = tiny_run[0]
  capsys.readouterr()
  code = _block("readme-load-example")
  assert '"workdir/shakespeare"' in code
  code = code.replace('"workdir/shakespeare"', repr(str(workdir)))
  namespace = {}
  exec(compile(code, "README load example", "exec"), namespace)
  printed = capsys.readouterr().out
  assert printed.startswith("ROMEO:") and len(printed) > 40
  assert namespace["out"].tokens.shape == (1, 64)


def test_ci_runs_the_readme_test_command():
  root = pathlib.Path(__file__).parents[1]
  cmd = _block("test-command").strip()
  assert "pytest" in cmd and 'pip install -e ".[test]"' in cmd
  assert "test-command" in (root / ".ci" / "run").read_text()
