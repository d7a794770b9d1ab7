# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Restoring a trained model from a workdir, for evaluation and sampling."""

from typing import Any, Optional

import jax

from routing_jax.training import batch_scaling
from routing_jax import errors
from routing_jax.training import checkpointing
from routing_jax.training import loading
from routing_jax.training import sharding
from routing_jax.training import train
from routing_jax.training import train_loop


def restore(config: Any, workdir: str, split: Optional[str] = None):
  """(trainer, state, datasets, step) from the newest good checkpoint.

  Args:
    config: the config the run was trained with.
    workdir: the training run's workdir (local path or URL).
    split: evaluation split (default: config.data.eval_split).

  Raises:
    errors.WorkdirError: the workdir has no checkpoint.
    errors.DataError: the data cannot be opened.
  """
  model_cfg = train.validate_config(config)
  # Before the data and the model are built: a wrong workdir fails at once.
  directory = loading.checkpoint_dir(workdir)
  if split is not None:
    with config.unlocked():
      config.data.eval_split = split
  mesh = sharding.create_mesh(config.mesh)
  batch_scaling.resolve(config, sharding.batch_devices(mesh))
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
    raise errors.WorkdirError(f"no checkpoints in {directory}")
  state, _, step = restored
  return trainer, state, datasets, int(step)


def host_variables(state: train.TrainState) -> dict[str, Any]:
  return jax.device_get({"params": state.params, "kmeans": state.kmeans})
