# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Evaluate a trained run in the paper's unit on a chosen split.

  python -m routing_jax.evaluate --workdir=/tmp/shakespeare --split=test

The run's config is read from its workdir (config.json); --config gives
it explicitly instead (its model section must be the run's).

Prints the per-token loss in nats and the paper's metric (bits/byte for
bytes, bits/dim for images, perplexity for words, word-level perplexity for
PG-19 subwords) over the whole split (or --max_batches batches).
"""

import json

from absl import flags
from ml_collections import config_flags

from routing_jax import cli
from routing_jax import cli_checks
from routing_jax import distributed
from routing_jax import errors
from routing_jax import xla_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Config file (default: the run's own, config.json in --workdir).",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's workdir.")
_SPLIT = flags.DEFINE_string(
    "split", None, "Split to evaluate (default: data.eval_split)."
)
_MAX_BATCHES = flags.DEFINE_integer(
    "max_batches",
    0,
    "Stop after this many batches (0: all).",
    lower_bound=0,
)
flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  xla_flags.apply_cpu_defaults()  # before jax starts a backend
  from routing_jax import inference  # pylint: disable=g-import-not-at-top
  from routing_jax.training import train_loop  # pylint: disable=g-import-not-at-top

  # Everything the flags and config can get wrong, before any restore.
  config, _ = cli_checks.run_config(_CONFIG.value, _WORKDIR.value)
  distributed.initialize()
  cli_checks.mesh_for_here(config, saved=_CONFIG.value is None)
  try:
    trainer, state, datasets, step = inference.restore(
        config, _WORKDIR.value, _SPLIT.value
    )
  except FileNotFoundError as e:
    raise errors.WorkdirError(str(e)) from e
  limit = _MAX_BATCHES.value or len(datasets.eval)
  ev = train_loop.evaluate(trainer, state, datasets, trainer.mesh, limit)
  out = {
      "step": step,
      "split": config.data.eval_split,
      **{k[5:]: v for k, v in ev.items()},
  }
  if distributed.is_primary():
    print(json.dumps(out, indent=1))


def run():
  """The `routing-jax-evaluate` console script."""
  cli.run(main)


if __name__ == "__main__":
  run()
