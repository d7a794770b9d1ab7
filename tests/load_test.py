# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Tests for routing_jax.load: a trained run's workdir as (model, variables).

The session's tiny run (conftest: 4 steps, checkpoints at 2 and 4) is
loaded; the reference for every comparison is the full
training state restored the way a resumed run restores it.
"""

import logging
import pathlib
import shutil

import jax
import numpy as np
import pytest

from helpers import checkpoint_faults as faults
from helpers import tiny_run
import routing_jax as rj
from routing_jax import cli_checks
from routing_jax import errors
from routing_jax.training import checkpoint_reads
from routing_jax.training import checkpointing


def _config(**model):
  return tiny_run.config(**model)


@pytest.fixture(name="run")
def fixture_run(tiny_run):
  return tiny_run


def _full_state(workdir, like, step):
  with checkpointing.Checkpointer(workdir / "checkpoints", keep=100) as ckpt:
    return ckpt.restore(like, step=step)[0]


def _assert_variables_equal(variables, state):
  want = {"params": state.params, "kmeans": state.kmeans}
  assert jax.tree.structure(variables) == jax.tree.structure(want)
  for x, y in zip(jax.tree.leaves(variables), jax.tree.leaves(want)):
    assert np.asarray(x).tobytes() == np.asarray(y).tobytes()


def test_load_reads_parameters_and_kmeans_only(run, monkeypatch):
  workdir, state = run
  reads = []
  real = checkpoint_reads.read_step

  def spy(directory, step, target, partial=False):
    reads.append((step, partial, target.opt_state))
    return real(directory, step, target, partial)

  monkeypatch.setattr(checkpoint_reads, "read_step", spy)
  model, variables = rj.load(str(workdir))
  assert reads == [(4, True, None)]  # no optimizer state asked for
  _assert_variables_equal(variables, state)
  # The model is the run's: its logits equal the trained model's.
  tokens = np.arange(1, 17, dtype=np.int32)[None]
  trained = {"params": state.params, "kmeans": state.kmeans}
  np.testing.assert_array_equal(
      model.apply(variables, tokens)[0],
      rj.TransformerLM(model.config).apply(trained, tokens)[0],
  )
  assert model.config.d_model == 32 and model.config.num_layers == 2


def test_load_falls_back_past_a_damaged_step_and_moves_nothing(
    run, tmp_path, caplog
):
  workdir = tmp_path / "run"
  shutil.copytree(run[0], workdir)
  faults.flip_bytes(workdir / "checkpoints" / "4", only="params")
  with caplog.at_level(logging.WARNING):
    _, variables = rj.load(str(workdir))
  assert any("ChecksumError" in r.getMessage() for r in caplog.records)
  _assert_variables_equal(variables, _full_state(workdir, run[1], 2))
  # Read-only: a job may be training here.
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == [
      "2",
      "4",
  ]


def test_load_with_a_config_checks_it_against_the_run(run):
  workdir, state = run
  _, variables = rj.load(str(workdir), _config())
  _assert_variables_equal(variables, state)
  with pytest.raises(errors.ConfigError, match="model.d_model=64"):
    rj.load(str(workdir), _config(d_model=64))


def test_load_names_what_is_missing(run, tmp_path):
  bare = tmp_path / "bare"
  shutil.copytree(run[0], bare)
  (bare / "config.json").unlink()
  with pytest.raises(errors.WorkdirError, match="no config.json"):
    rj.load(str(bare))
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "config.json").write_text((run[0] / "config.json").read_text())
  with pytest.raises(errors.WorkdirError, match="no checkpoints"):
    rj.load(str(empty))


def test_saved_config_round_trips_and_its_mesh_adapts(run, caplog):
  workdir = pathlib.Path(run[0])
  config, model_cfg = cli_checks.run_config(None, str(workdir))
  assert model_cfg == rj.ModelConfig.from_config(_config().model)
  assert config.to_dict() == _config().to_dict()  # tuples stay tuples
  config.mesh.fsdp = 16  # a pod's mesh, read back on this machine
  with caplog.at_level(logging.WARNING):
    cli_checks.mesh_for_here(config, saved=True)
  assert (config.mesh.data, config.mesh.fsdp, config.mesh.tensor) == (-1, 1, 1)
  assert any("does not fit" in r.getMessage() for r in caplog.records)
  config.mesh.fsdp = 16
  with pytest.raises(errors.ConfigError, match="mesh"):
    cli_checks.mesh_for_here(config, saved=False)  # given: the user's call
