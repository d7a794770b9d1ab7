# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The config of the session's shared tiny run (conftest's `tiny_run`)."""

from experiments import shakespeare


def config(**model):
  """The tiny Shakespeare config: 4 steps, checkpoints at steps 2 and 4;
  `model` overrides model fields."""
  c = shakespeare.get_config("tiny")
  c.train.steps, c.train.checkpoint_every = 4, 2
  c.train.eval_every = c.train.keep_checkpoints = 100
  for key, value in model.items():
    c.model[key] = value
  return c
