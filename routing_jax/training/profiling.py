# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""A jax.profiler trace of a few training steps, saved in the workdir.

The trace (`<workdir>/profile/plugins/profile/<run>/*.xplane.pb`) opens in
TensorBoard's profile plugin or XProf. Only process 0 traces. The first step
of a run is skipped when possible: it is mostly compilation.
"""

import os
import shutil
import tempfile

from absl import logging
from etils import epath
import jax

from routing_jax.training import workdir as workdir_lib

PROFILE_DIR = "profile"


class StepProfiler:
  """Traces steps [first, first + num_steps) of a training loop.

  Call `update(step, state)` at the start of every step (before it is
  dispatched) and `close(state)` after the loop. Steps are dispatched ahead
  of the device, so before the trace starts or stops `update` waits for
  `state` (the previous step's output): the trace then holds exactly the
  steps it names.
  """

  def __init__(
      self,
      workdir: epath.Path,
      start_step: int,
      total_steps: int,
      num_steps: int,
      enabled: bool = True,
  ):
    remaining = total_steps - start_step
    self._first = start_step + (1 if remaining > num_steps else 0)
    self._stop = min(self._first + num_steps, total_steps)
    self._enabled = enabled and num_steps > 0 and remaining > 0
    self._dest = workdir / PROFILE_DIR
    self._local = None
    self._active = False

  def update(self, step: int, state=None) -> None:
    if not self._enabled:
      return
    starts = step == self._first and not self._active
    if starts or (step == self._stop and self._active):
      jax.block_until_ready(state)
    if starts:
      # The profiler writes through its own file layer: trace to a local
      # directory and copy, so that any epath workdir works.
      self._local = (
          os.fspath(self._dest)
          if not workdir_lib.is_url(self._dest)
          else tempfile.mkdtemp(prefix="rj_profile_")
      )
      jax.profiler.start_trace(self._local)
      self._active = True
    elif step == self._stop and self._active:
      self._finish()

  def close(self, state=None) -> None:
    if self._active:
      jax.block_until_ready(state)
      self._finish()

  def _finish(self) -> None:
    jax.profiler.stop_trace()
    self._active = False
    self._enabled = False
    if workdir_lib.is_url(self._dest):
      for root, _, files in os.walk(self._local):
        rel = os.path.relpath(root, self._local)
        target = self._dest if rel == "." else self._dest / rel
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
          with open(os.path.join(root, name), "rb") as f:
            (target / name).write_bytes(f.read())
      shutil.rmtree(self._local, ignore_errors=True)
    logging.info(
        "Profile of steps %d-%d written to %s",
        self._first + 1,
        self._stop,
        self._dest,
    )
