# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Resuming a run: the model hash a checkpoint must match, and the checks a
restored step passes before training goes on from it.

A checkpoint records `config_hash` of the model section it was trained
with; a run resumes from it only with the same hash (same shapes do not
mean the same model, e.g. mode="topk"), a data pipeline that can continue
where it stopped, and `train.steps` not below the step.
"""

import hashlib
import json
from typing import Any, Optional

from routing_jax import errors
from routing_jax.nn import model_config
from routing_jax.training import checkpointing

# Fields that pick how the same function is computed: a run may resume
# under either value (and older checkpoints, saved before the field existed,
# keep their hash).
HASH_EXEMPT = ("routing.implementation", "routing.kernel_block_sizes")
# Fields added after checkpoints existed, with the value that computes what
# runs from before the field computed: left out of the hash at that value,
# so those runs still resume.
_HASH_NEUTRAL = {
    "routing.warmup": "dense",
    "routing.kmeans.epsilon": 1e-5,
    "routing.kmeans.prior_count": None,
    "init_mode": "fan_avg",
}


def config_hash(config: Any) -> str:
  """Hash of the model section: a checkpoint must match the architecture.

  Computed over the flat field names of the versions before `model.routing`
  was nested (`model_config.legacy_flat`), so their checkpoints resume.
  """
  model = {
      key: value
      for key, value in model_config.dotted(config.model.to_dict()).items()
      if key not in HASH_EXEMPT
      and not (key in _HASH_NEUTRAL and value == _HASH_NEUTRAL[key])
  }
  text = json.dumps(
      model_config.legacy_flat(model), sort_keys=True, default=str
  )
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def restore(
    ckpt: checkpointing.Checkpointer,
    state: Any,
    train_data: Any,
    model_hash: str,
    steps: int,
    before: Optional[int] = None,
) -> Optional[tuple[Any, int]]:
  """(state, step) of the newest restorable checkpoint (before `before`),
  with `train_data` positioned after it; None for a fresh start.
  `model_hash` is this run's `config_hash`.

  Raises:
    errors.ConfigError: the checkpoint was trained with another model
      section, or the data config cannot continue it.
    errors.UserInputError: `steps` is below the checkpoint's step.
  """
  restored = ckpt.restore(state, before=before)
  if restored is None:
    return None
  state, data_state, start = restored
  saved = ckpt.read_meta(start).get("model_hash")
  if saved not in (None, model_hash):
    raise errors.ConfigError(
        f"{ckpt.directory}: checkpoint step {start} was trained with a "
        f"different model config section (model hash {saved} !="
        f" {model_hash});"
        " use a new workdir."
    )
  try:
    train_data.set_state(data_state)
  except ValueError as e:  # e.g. another batch size
    raise errors.ConfigError(
        f"{ckpt.directory}: checkpoint step {start} cannot resume with this"
        f" data config: {e}; rerun with the config it was saved with (the"
        " workdir's config.json), or use a new workdir."
    ) from e
  if start > steps:
    raise errors.UserInputError(
        f"train.steps={steps} is below step {start} of the checkpoint"
        f" in {ckpt.directory} (a save would give the later state the"
        f" smaller step's name): give --config.train.steps={start} or more,"
        " or use a new workdir."
    )
  return state, start
