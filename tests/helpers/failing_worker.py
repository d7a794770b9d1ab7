# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""A stand-in CLI whose process --fail_process fails mid-job.

Started like the programs (`cli.run`, the distributed flags): every process
joins the job and exchanges values with the others in a loop, as a training
loop does each step; at round 3 process --fail_process raises --kind ("user":
a DataError, printed as one line; "bug": a RuntimeError, with its
traceback). Process 0 holds a workdir lock under --workdir, as main does.
"""

import time

from absl import flags
import numpy as np

from routing_jax import cli
from routing_jax import distributed
from routing_jax import errors

_FAIL = flags.DEFINE_integer("fail_process", 1, "The process that fails.")
_KIND = flags.DEFINE_enum("kind", "user", ["user", "bug"], "What it raises.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Locked by process 0.")


def main(argv):
  del argv
  distributed.initialize()
  import jax  # pylint: disable=g-import-not-at-top
  from routing_jax import multihost  # pylint: disable=g-import-not-at-top
  from routing_jax.training import workdir as workdir_lib  # pylint: disable=g-import-not-at-top

  with workdir_lib.lock(_WORKDIR.value):
    for step in range(10_000):
      multihost.allgather(np.int32(step))
      if step == 3 and jax.process_index() == _FAIL.value:
        if _KIND.value == "user":
          raise errors.DataError("shard 7 of the training split is unreadable")
        raise RuntimeError("injected bug")
      time.sleep(0.05)


if __name__ == "__main__":
  cli.run(main)
