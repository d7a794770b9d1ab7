# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Text samples from a model in training: the final report's and the ones
written to TensorBoard at each evaluation."""

import jax
import numpy as np

from routing_jax import multihost
from routing_jax.nn import generation
from routing_jax.training import train


def sample_text(
    trainer: train.Trainer,
    state: train.TrainState,
    datasets,
    prompt: str,
    length: int,
    seed: int = 0,
    temperature: float = 0.8,
    top_p: float = 0.95,
) -> str:
  """Cached sampling from the trained model (text datasets only)."""
  ids = (
      np.asarray(datasets.encode(prompt), np.int32)
      if prompt
      else (np.zeros((0,), np.int32))
  )
  # Position 0 holds the start token 0, as in training.
  prompt_ids = np.concatenate([[0], ids]).astype(np.int32)[None]
  total = prompt_ids.shape[1] + length
  variables = {"params": state.params, "kmeans": state.kmeans}
  with jax.set_mesh(trainer.mesh):
    out = generation.sample(
        trainer.model,
        variables,
        prompt_ids,
        total,
        rng=jax.random.PRNGKey(seed),
        temperature=temperature,
        top_p=top_p,
    )
  tokens = np.asarray(jax.device_get(out.tokens)[0, 1:])
  # Every process decodes; a difference would mean diverged collectives.
  multihost.check_same(tokens.tobytes(), "the sampled text")
  return datasets.decode(tokens)
