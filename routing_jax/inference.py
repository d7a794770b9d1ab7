# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Restoring a trained model from a workdir, for evaluation and sampling."""

import math
from typing import Any, Optional

import jax

from routing_jax.training import batch_scaling
from routing_jax.training import checkpointing
from routing_jax.training import sharding
from routing_jax.training import train
from routing_jax.training import train_loop
from routing_jax.training import workdir as workdir_lib


def restore(config: Any, workdir: str, split: Optional[str] = None):
  """(trainer, state, datasets, step) from the newest good checkpoint.

  Args:
    config: the config the run was trained with.
    workdir: the training run's workdir (local path or URL).
    split: evaluation split (default: config.data.eval_split).

  Raises:
    FileNotFoundError: the workdir has no checkpoint.
    errors.DataError: the data cannot be opened.
  """
  model_cfg = train.validate_config(config)
  # Before the data and the model are built: a wrong workdir fails at once.
  directory = workdir_lib.resolve(workdir) / "checkpoints"
  if not directory.is_dir():
    raise FileNotFoundError(
        f"no checkpoints in {directory}: train first "
        "(python -m routing_jax.main ...)"
    )
  if split is not None:
    with config.unlocked():
      config.data.eval_split = split
  mesh = sharding.create_mesh(config.mesh)
  batch_scaling.resolve(
      config, math.prod(mesh.shape[a] for a in sharding.BATCH_AXES)
  )
  rules = sharding.logical_rules()
  datasets = train_loop.create_datasets(config, mesh, model_cfg.vocab_size)
  trainer, state = train.build_trainer(config, mesh, rules, model_cfg)
  # Read-only: a training job may be saving into this directory right now.
  ckpt = checkpointing.Checkpointer(directory, read_only=True)
  try:
    restored = ckpt.restore(state)
  finally:
    ckpt.close()
  if restored is None:
    raise FileNotFoundError(f"no checkpoints in {directory}")
  state, _, step = restored
  return trainer, state, datasets, int(step)


def host_variables(state: train.TrainState) -> dict[str, Any]:
  return jax.device_get({"params": state.params, "kmeans": state.kmeans})
