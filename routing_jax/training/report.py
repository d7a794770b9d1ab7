# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The end of the main job: final metric, baseline, text sample, loss curve.

`final_report` builds what `python -m routing_jax.main` prints after the
training loop (train_loop.py) returns.
"""

from typing import Any

import jax

from routing_jax.training import plots
from routing_jax.training import text_samples
from routing_jax.training import train_loop


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
    text = text_samples.sample_text(
        trainer,
        state,
        datasets,
        config.train.sample_prompt,
        config.train.sample_length,
        seed=config.train.seed,
    )
    lines.append("sample:\n" + text)
  return "\n".join(lines)
