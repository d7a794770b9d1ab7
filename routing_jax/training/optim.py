# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Optimizers and learning-rate schedules from the `train` config section.

adafactor: the paper's (docs/paper.md §3.4): factored second moments, no
momentum, decay 1 − t^−0.8, update clipping 1.0, relative (parameter-scale)
steps, lr 0.01 flat for `warmup_steps` then 1/√step ("rsqrt").
adamw: warmup then cosine (or rsqrt / constant), decoupled weight decay.
Weight decay never touches norms or biases: decoupled for adamw, an L2
gradient term for adafactor (as the reference's loss term). Gradient clipping
by global norm.
"""

from typing import Any

import jax
import jax.numpy as jnp
import optax

from routing_jax.training.train_config import OPTIMIZERS


def learning_rate_schedule(t: Any) -> optax.Schedule:
  """lr(step) for `t` = config.train.

  rsqrt: lr·√w / √max(step, w) (the reference: flat for w steps, no ramp).
  cosine: linear ramp over w steps, then cosine decay to 0 at t.steps.
  constant: linear ramp over w steps, then flat.
  """
  lr, warm = float(t.lr), int(t.warmup_steps)
  if t.schedule == "rsqrt":
    return (
        lambda step: lr
        * jnp.sqrt(max(warm, 1))
        / jnp.sqrt(jnp.maximum(step, max(warm, 1)).astype(jnp.float32))
    )
  ramp = (
      optax.linear_schedule(0.0, lr, warm)
      if warm > 0
      else optax.constant_schedule(lr)
  )
  if t.schedule == "cosine":
    decay = optax.cosine_decay_schedule(lr, max(int(t.steps) - warm, 1))
  else:
    decay = optax.constant_schedule(lr)
  return optax.join_schedules([ramp, decay], [warm])


def decay_mask(params: Any) -> Any:
  """True for weights that take weight decay: not biases, not norms."""

  def keep(path, _):
    # Boxed (LogicallyPartitioned) leaves add a ".value" attribute step.
    names = [str(getattr(p, "key", getattr(p, "name", p))) for p in path]
    names = [n for n in names if n != "value"]
    return not (
        names[-1] in ("bias", "scale") or any("norm" in n for n in names)
    )

  return jax.tree_util.tree_map_with_path(keep, params)


def create_optimizer(t: Any) -> optax.GradientTransformation:
  """The optimizer of config.train `t` (schedule, clipping, decay)."""
  schedule = learning_rate_schedule(t)
  parts = []
  if t.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(float(t.grad_clip)))
  if t.optimizer == "adafactor":
    if t.weight_decay > 0:
      # The reference adds decay·Σ½‖v‖² to the loss (docs/paper.md §3.4): its
      # gradient decay·v joins the gradient before Adafactor's scaling.
      parts.append(
          optax.add_decayed_weights(float(t.weight_decay), mask=decay_mask)
      )
    parts.append(
        optax.adafactor(
            learning_rate=schedule,
            decay_rate=0.8,
            clipping_threshold=1.0,
            multiply_by_parameter_scale=True,
            momentum=None,
            factored=True,
        )
    )
  elif t.optimizer == "adamw":
    parts.append(
        optax.adamw(
            schedule,
            b1=float(t.b1),
            b2=float(t.b2),
            weight_decay=float(t.weight_decay),
            mask=decay_mask,
        )
    )
  else:
    raise ValueError(
        f"train.optimizer must be one of {OPTIMIZERS}, got {t.optimizer!r}"
    )
  return optax.chain(*parts)
