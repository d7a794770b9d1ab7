# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""A full disk ends training with one line and a non-zero exit, never a hang.

Before, tensorboardX's writer thread died on ENOSPC and the training loop
blocked forever in its queue (SIGTERM only set a flag the loop never read).
The injected fault runs everywhere; the real full disk needs a tmpfs mount
(root) and is skipped elsewhere.
"""

import errno
import os
import pathlib
import subprocess
import sys
import threading

import pytest

from routing_jax import cli
from routing_jax.training import metrics

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "helpers"))
import fs_faults  # pylint: disable=g-import-not-at-top,wrong-import-position

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_failed_event_write_raises_in_the_writing_thread(tmp_path, monkeypatch):
  fs_faults.enospc_after(monkeypatch, 2000, part="tensorboard")
  writer = metrics.MetricWriter(tmp_path)
  outcome = {}

  def loop():
    try:
      for step in range(1000):
        writer.write(step, {f"train/x{i}": float(i) for i in range(8)})
    except OSError as e:
      outcome["error"] = e

  thread = threading.Thread(target=loop, daemon=True)
  thread.start()
  thread.join(timeout=30)
  assert not thread.is_alive(), "the metric writer hangs on a full disk"
  assert outcome["error"].errno == errno.ENOSPC
  assert cli.describe(outcome["error"]).startswith("Disk full writing ")


@pytest.mark.parametrize(
    "what, leave, args",
    [
        # The metric files fill the disk (where the writer thread hung).
        ("metrics", 200_000, ("--config.train.checkpoint_every=100000",)),
        # A checkpoint save fills it: the committed steps stay.
        ("checkpoint", None, ("--config.train.checkpoint_every=5",)),
    ],
)
def test_full_disk_ends_the_run_in_one_line(tmp_path, what, leave, args):
  disk = tmp_path / "disk"
  with fs_faults.small_tmpfs(disk, 3 * 2**20):
    if leave:
      fs_faults.fill(disk, leave)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "routing_jax.main",
            "--config=experiments/shakespeare.py:tiny",
            "--config.train.steps=100000",
            "--config.train.log_every=1",
            "--config.train.eval_every=100000",
            "--config.train.keep_checkpoints=100",
            "--nosample",
            f"--workdir={disk}/run",
            *args,
        ],
        cwd=ROOT,
        # One CPU device, as a CPU user has (the CLI sets its own XLA flags).
        # With conftest's 8 fake devices Orbax saves each small replicated
        # array as 8 slices and the tiny checkpoint takes 1.5-3 MB instead
        # of 0.6 MB, varying from run to run: the first save could fill the
        # disk.
        env={k: v for k, v in os.environ.items() if k != "XLA_FLAGS"},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    ours = [l for l in result.stderr.splitlines() if l.startswith("Disk full")]
    assert len(ours) == 1 and "rerun the same command" in ours[0]
    # Orbax's writer threads and tensorstore's late callbacks print no
    # tracebacks of the failed save before that line (what may still come
    # while the interpreter shuts down is not ours to silence reliably).
    before = result.stderr.split(ours[0], 1)[0]
    assert "Traceback" not in before, before[-3000:]
    assert not (disk / "run" / "run.lock").exists()  # Released.
    if what == "checkpoint":
      committed = sorted(
          int(p.name)
          for p in (disk / "run" / "checkpoints").iterdir()
          if p.name.isdigit()
      )
      assert committed and committed[0] == 5, (
          sorted(str(p) for p in (disk / "run").rglob("*")),
          result.stderr[-3000:],
      )
      for step in committed:
        assert (disk / "run/checkpoints" / str(step) / "state").is_dir()
