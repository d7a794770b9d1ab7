# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Scaling a config's batch (and learning rate) to the devices of a run.

The paper configs give a global batch (`data.batch_size`, 32 sequences) and
the learning rate tuned for it. On more devices than that batch has rows,
`data.per_device_batch_size` sets the global batch instead: that many rows
for each device along the batch axes (mesh.data × mesh.fsdp; the devices
of one tensor group share their rows). `train.lr_batch_scaling` then says
how the learning rate follows the batch, relative to `data.batch_size`:

  none    the configured rate as it is (the default)
  sqrt    times sqrt(global / data.batch_size): the usual rule for Adam-
          style optimizers, Adafactor included
  linear  times global / data.batch_size (SGD's rule; large factors want a
          longer warm-up)

`resolve` writes the result back into the config at start-up, so the
run's config.json records the batch and rate it trained with (resolving
it again changes nothing).
"""

from typing import Any

from routing_jax.training.train_config import LR_BATCH_SCALINGS

_EXPONENT = {"none": 0.0, "sqrt": 0.5, "linear": 1.0}


def check(config: Any) -> None:
  """Raises ValueError naming the field for a bad per-device batch or rule."""
  per_device = config.data.get("per_device_batch_size", 0)
  rule = config.train.get("lr_batch_scaling", "none")
  if per_device < 0:
    raise ValueError(
        f"data.per_device_batch_size={per_device!r}: must be >= 0 (0: use"
        " data.batch_size as the global batch)"
    )
  if rule not in LR_BATCH_SCALINGS:
    raise ValueError(
        f"train.lr_batch_scaling={rule!r}: must be one of {LR_BATCH_SCALINGS}"
    )


def resolve(config: Any, batch_devices: int) -> str:
  """Sets data.batch_size (global) and train.lr for `batch_devices` devices
  when data.per_device_batch_size > 0; returns a line saying what it did
  ("" when nothing changes).

  Args:
    config: the run's config (modified in place).
    batch_devices: devices along the mesh's batch axes (data x fsdp, all
      processes).
  """
  check(config)
  per_device = config.data.get("per_device_batch_size", 0)
  if not per_device:
    return ""
  rows = per_device * batch_devices
  base = config.data.batch_size
  rule = config.train.get("lr_batch_scaling", "none")
  if rows == base:
    return ""
  factor = (rows / base) ** _EXPONENT[rule]
  config.data.batch_size = rows
  config.train.lr = float(config.train.lr) * factor
  return (
      f"global batch {rows} ({per_device} per device x {batch_devices};"
      f" configured {base}),"
      f" lr {config.train.lr:.4g} ({rule} scaling, x{factor:.3g})"
  )
