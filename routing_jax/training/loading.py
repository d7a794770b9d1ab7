# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""`load`: a training run's workdir as (model, variables), for inference."""

from typing import Any, Optional

import flax.linen as nn
import jax

from routing_jax import errors
from routing_jax.nn.model import TransformerLM
from routing_jax.training import checkpointing
from routing_jax.training import train
from routing_jax.training import resume
from routing_jax.training import workdir as workdir_lib


def load(workdir: str, config: Optional[Any] = None):
  """(model, variables) of a training run's newest good checkpoint.

  For notebooks and serving: reads the parameters and the k-means state
  only (no optimizer state is built or read) onto the first local device,
  with the same fallback and checksum checks as a resumed run, and never
  writes to the workdir (a job may be training there).

    model, variables = routing_jax.load("/tmp/shakespeare")
    logits, _ = model.apply(variables, tokens)

  Args:
    workdir: the training run's workdir (local path or URL).
    config: the run's config; default: the one it saved (config.json).
      A model section that differs from the saved one is refused.

  Raises:
    errors.WorkdirError: no config.json (and no config) or no checkpoint.
    errors.ConfigError: the config differs from the run's.
    checkpointing.CheckpointRestoreError: no checkpoint could be read.
  """
  if config is None:
    config = workdir_lib.load_config(workdir)
  else:
    workdir_lib.check_model_config(workdir, config, ignore=resume.HASH_EXEMPT)
  try:
    model_cfg = train.validate_config(config)
  except ValueError as e:
    raise errors.ConfigError(str(e)) from e
  directory = checkpoint_dir(workdir)
  model = TransformerLM(model_cfg)
  shape = (1, train.init_length(model_cfg, config.data.seq_len))
  abstract = jax.eval_shape(
      lambda: nn.unbox(
          model.init(jax.random.key(0), jax.numpy.zeros(shape, "int32"))
      )
  )
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  placed = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
      abstract,
  )
  target = train.TrainState(
      step=None,
      params=placed["params"],
      opt_state=None,
      kmeans=placed.get("kmeans", {}),
      rng=None,
  )
  ckpt = checkpointing.Checkpointer(directory, read_only=True)
  try:
    restored = ckpt.restore(target, partial=True)
    if restored is None:
      raise errors.WorkdirError(f"no checkpoints in {directory}")
    saved = ckpt.read_meta(restored[2]).get("model_hash")
  finally:
    ckpt.close()
  if saved not in (None, resume.config_hash(config)):
    raise errors.ConfigError(
        f"{directory}: checkpoint step {restored[2]} was trained with a"
        " different model config section; load it with the run's own config"
        " (leave config=None to read config.json)."
    )
  state = restored[0]
  return model, {"params": state.params, "kmeans": state.kmeans}


def checkpoint_dir(workdir: str):
  """`<workdir>/checkpoints`; WorkdirError (before anything is built) if
  the run has saved nothing."""
  directory = workdir_lib.resolve(workdir) / "checkpoints"
  if not directory.is_dir():
    raise errors.WorkdirError(
        f"no checkpoints in {directory}: train first "
        "(python -m routing_jax.main ...)"
    )
  return directory
