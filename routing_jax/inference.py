"""Restoring a trained model from a workdir, for evaluation and sampling."""

import os
from typing import Any, Optional

import jax

from routing_jax import checkpointing
from routing_jax import input_pipeline
from routing_jax import sharding
from routing_jax import train


def restore(config: Any, workdir: str, split: Optional[str] = None):
  """(trainer, state, datasets, step) from the newest good checkpoint.

  Args:
    config: the config the run was trained with.
    workdir: the training run's workdir.
    split: evaluation split (default: config.data.eval_split).

  Raises:
    FileNotFoundError: the workdir has no checkpoint.
  """
  model_cfg = train.validate_config(config)
  if split is not None:
    with config.unlocked():
      config.data.eval_split = split
  mesh = sharding.create_mesh(config.mesh)
  rules = sharding.logical_rules()
  datasets = input_pipeline.create_datasets(
      config.data, vocab_size=model_cfg.vocab_size)
  trainer, state = train.build_trainer(config, mesh, rules, model_cfg)
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"no checkpoints in {directory}: train first "
                            "(python -m routing_jax.main ...)")
  ckpt = checkpointing.Checkpointer(directory, async_save=False)
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
