# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The installed distribution: PEP 621 metadata and the console scripts."""

import ast
import importlib
import importlib.metadata as md
import os
import pathlib
import subprocess
import sys

SCRIPTS = {
    "routing-jax-train": "routing_jax.main:run",
    "routing-jax-evaluate": "routing_jax.evaluate:run",
    "routing-jax-sample": "routing_jax.sample:run",
    "routing-jax-dryrun": "routing_jax.dryrun:run",
}


def test_metadata_extras_and_package_data():
  dist = md.distribution("routing-jax")
  assert dist.metadata["Requires-Python"] == ">=3.11"
  assert {"tpu", "test", "gcs"} <= set(dist.metadata.get_all("Provides-Extra"))
  data = pathlib.Path(importlib.import_module("routing_jax.data").__file__)
  assert (data.parent / "shakespeare.tar.xz").stat().st_size > 0
  assert (data.parent / "datasets" / "checksums.tsv").exists()


def test_console_scripts_run_the_programs(tmp_path):
  found = {
      e.name: e.value
      for e in md.entry_points(group="console_scripts")
      if e.name.startswith("routing-jax")
  }
  assert found == SCRIPTS
  # Each module defines the function (read, not imported: the programs
  # define the same absl flags, so one process can import only one).
  root = pathlib.Path(__file__).resolve().parents[1]
  for value in SCRIPTS.values():
    module, fn = value.split(":")
    tree = ast.parse((root / (module.replace(".", "/") + ".py")).read_text())
    assert fn in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
  # The script itself, as a user types it: a workdir with no run is one
  # line and exit status 1.
  script = pathlib.Path(sys.executable).parent / "routing-jax-evaluate"
  result = subprocess.run(
      [str(script), f"--workdir={tmp_path / 'none'}"],
      capture_output=True,
      text=True,
      timeout=120,
      env={**os.environ, "JAX_PLATFORMS": "cpu"},
      check=False,
  )
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  assert str(tmp_path / "none") in result.stderr.splitlines()[-1]
