# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The multi-process flags the programs share, and joining the job.

`main`, `evaluate` and `sample` take the same flags, so a model trained with
its parameters sharded over several hosts is evaluated and sampled the same
way (every launcher in launch/ passes them):

  --distributed                  call jax.distributed.initialize() (it finds
                                 the coordinator on TPU, SLURM, Open MPI)
  --coordinator_address, --num_processes, --process_id
                                 the same, given explicitly
"""

from absl import flags

_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize()."
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (multi-host)."
)
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Number of processes (multi-host)."
)
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "This process's id (multi-host)."
)


def initialize() -> None:
  """Joins the multi-process job when the flags ask for it."""
  import jax  # pylint: disable=g-import-not-at-top

  explicit = (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  if any(v is not None for v in explicit) or _DISTRIBUTED.value:
    jax.distributed.initialize(
        coordinator_address=_COORDINATOR.value,
        num_processes=_NUM_PROCESSES.value,
        process_id=_PROCESS_ID.value,
    )
    from routing_jax import multihost  # pylint: disable=g-import-not-at-top

    # One process's failure ends the job, with the reason in every log.
    multihost.watch_for_failures()


def is_primary() -> bool:
  """Process 0: the one that prints results."""
  import jax  # pylint: disable=g-import-not-at-top

  return jax.process_index() == 0
