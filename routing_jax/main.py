# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Entry point: train a Routing Transformer from an ml-collections config.

  python -m routing_jax.main --config=experiments/shakespeare.py \
      --workdir=/tmp/shakespeare [--config.train.steps=200]

The config is locked, so a misspelled override fails; every field is
validated before anything compiles. Multi-host: add --distributed (TPU pods,
SLURM and Open MPI are auto-detected) or give --coordinator_address,
--num_processes and --process_id. A run in an existing workdir resumes;
one run at a time: it holds <workdir>/run.lock (see training/workdir.py).

The workdir may be a URL (gs://bucket/run). It receives config.json,
checkpoints/, metrics.jsonl, tensorboard/, loss_curve.png and, with
--profile, a jax.profiler trace in profile/. --compilation_cache_dir keeps
compiled programs across runs (a local path or a URL).
"""

import os

from absl import flags
from absl import logging
from ml_collections import config_flags

from routing_jax import cli
from routing_jax import cli_checks
from routing_jax import distributed
from routing_jax import errors
from routing_jax import xla_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Experiment config file (experiments/*.py[:arg]).",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints and metrics.")
_SAMPLE = flags.DEFINE_bool(
    "sample", True, "Print a text sample at the end of training."
)
_PROFILE = flags.DEFINE_bool(
    "profile",
    False,
    "Write a jax.profiler trace of a few training steps "
    "to <workdir>/profile (TensorBoard's profile plugin, XProf).",
)
_PROFILE_STEPS = flags.DEFINE_integer(
    "profile_steps", 3, "How many steps --profile traces.", lower_bound=1
)
_COMPILATION_CACHE_DIR = flags.DEFINE_string(
    "compilation_cache_dir",
    None,
    "Persistent compilation cache directory "
    "(local or gs://); reruns and restarts skip compiling.",
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  xla_flags.apply_cpu_defaults()  # before jax starts a backend
  config = _CONFIG.value
  # Validate before jax starts compiling anything.
  from routing_jax.training import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

  cli_checks.validate_config(config)
  workdir_lib.check_reachable(_WORKDIR.value)
  distributed.initialize()
  import jax  # pylint: disable=g-import-not-at-top

  cli_checks.check_mesh(config)
  from routing_jax import multihost  # pylint: disable=g-import-not-at-top

  multihost.check_same_program(config.to_json(sort_keys=True))
  if _COMPILATION_CACHE_DIR.value:
    jax.config.update("jax_compilation_cache_dir", _COMPILATION_CACHE_DIR.value)
  from routing_jax.training import report as report_lib  # pylint: disable=g-import-not-at-top
  from routing_jax.training import train_loop  # pylint: disable=g-import-not-at-top

  logging.info("Config:\n%s", config)
  # Before anything is written there (config.json included): a second run
  # on the same workdir stops here.
  with workdir_lib.lock(_WORKDIR.value):
    result = train_loop.train_and_evaluate(
        config,
        _WORKDIR.value,
        profile_steps=_PROFILE_STEPS.value if _PROFILE.value else 0,
    )
    if result.preempted:
      return
    # Every process computes the report (sampling is a collective); only
    # process 0 prints it, like the progress lines.
    report = report_lib.final_report(
        config, _WORKDIR.value, result, sample=_SAMPLE.value
    )
  if jax.process_index() == 0:
    print(report, flush=True)
  else:
    logging.info("Final report (printed by process 0):\n%s", report)


def run():
  """The `routing-jax-train` console script."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  cli.run(main)


if __name__ == "__main__":
  run()
