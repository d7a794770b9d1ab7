# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""One process's failure ends the whole multi-process job, with its reason.

Two real processes (jax.distributed on CPU, started directly rather than
by launch/local_multiprocess.sh, which would kill the survivor itself):
one fails mid-loop; the other, blocked in its next collective, must end
within seconds (not the runtime's minutes of heartbeat and shutdown
timeouts) and print which process failed and why, and the workdir lock
that process 0 held must be gone.
"""

import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize(
    "fail_process, kind, reason",
    [
        (
            1,
            "user",
            "Invalid data: shard 7 of the training split is unreadable",
        ),
        (0, "bug", "RuntimeError: injected bug"),
    ],
)
def test_one_failure_ends_every_process_naming_it(
    tmp_path, fail_process, kind, reason
):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(
      JAX_PLATFORMS="cpu",
      PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests" / "helpers")]),
  )
  port = _port()
  start = time.monotonic()
  procs = [
      subprocess.Popen(
          [
              sys.executable,
              "-m",
              "failing_worker",
              f"--coordinator_address=127.0.0.1:{port}",
              "--num_processes=2",
              f"--process_id={i}",
              f"--fail_process={fail_process}",
              f"--kind={kind}",
              f"--workdir={tmp_path}",
          ],
          cwd=ROOT,
          env=env,
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
      )
      for i in range(2)
  ]
  outs = [p.communicate(timeout=120) for p in procs]
  elapsed = time.monotonic() - start
  assert [p.returncode for p in procs] == [1, 1], [o[1][-2000:] for o in outs]
  # Far below the runtime's 100 s heartbeat and 300 s shutdown timeouts.
  assert elapsed < 60, elapsed
  survivor = 1 - fail_process
  failed_err, survivor_err = outs[fail_process][1], outs[survivor][1]
  assert reason in failed_err
  if kind == "bug":
    assert "Traceback" in failed_err
  assert f"Process {fail_process} of 2 failed: {reason}" in survivor_err
  assert f"Ending process {survivor} too" in survivor_err
  assert not (tmp_path / "run.lock").exists()
