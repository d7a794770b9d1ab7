# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The end of the main job: final metric, baseline, text sample, loss curve.

`final_report` builds what `python -m routing_jax.main` prints after the
training loop (train_loop.py) returns; `sample_text` is its cached sampling.
"""

from typing import Any

import jax
import numpy as np

from routing_jax import multihost
from routing_jax.nn import generation
from routing_jax.training import plots
from routing_jax.training import train
from routing_jax.training import train_loop


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


def final_report(
    config: Any,
    workdir: str,
    result: train_loop.TrainResult,
    sample: bool = True,
) -> str:
  """Validation metric (with the unigram baseline for bytes), a text sample
  and the loss-curve PNG, as printed at the end of the main job."""
  trainer, state, datasets = result.trainer, result.state, result.datasets
  ev = result.last_eval or train_loop.evaluate(
      trainer, state, datasets, trainer.mesh, config.train.eval_batches
  )
  name = next(
      k
      for k in ev
      if k.startswith("eval/")
      and k not in ("eval/loss_nats", "eval/kmeans_loss", "eval/tokens")
  )
  lines = [
      f"final {config.data.eval_split} {name[5:]}: {ev[name]:.4f} "
      f"(over {int(ev['eval/tokens'])} tokens)"
  ]
  if config.data.name == "shakespeare":
    from routing_jax.data import corpus  # pylint: disable=g-import-not-at-top

    base = corpus.unigram_bits_per_byte(config.data.eval_split)
    lines.append(
        f"unigram baseline {config.data.eval_split} bits_per_byte: {base:.4f}"
    )
  lines.append(f"training wall time: {result.wall_s:.0f} s")
  png = plots.plot_losses(workdir) if jax.process_index() == 0 else None
  if png:
    lines.append(f"loss curve: {png}")
  if sample and datasets.decode is not None:
    text = sample_text(
        trainer,
        state,
        datasets,
        config.train.sample_prompt,
        config.train.sample_length,
        seed=config.train.seed,
    )
    lines.append("sample:\n" + text)
  return "\n".join(lines)
