# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Per-step metrics without a host-device round trip every step.

The training loop hands each step's metrics (device arrays) to
`StepMetrics.add` and only fetches them, all at once, when it logs or is
about to save a checkpoint (`fetch`), so the host keeps dispatching steps
while the device works. `fetch` also finds the first non-finite step since
the last fetch, so nothing non-finite is ever saved.

`rates` turns the wall time between two log points, minus the time spent
in evaluation and checkpointing (`exclude`), into step time, tokens/s,
model TFLOP/s per device and MFU (model FLOPs from
routing_jax/training/flops.py over the device's bf16 peak from
routing_jax/training/hardware.py; left out where the device kind is not in
the table, e.g. on CPU).
"""

import time
from typing import Any, Callable, Optional

import jax
import numpy as np


class StepMetrics:
  """Buffers step metrics and measures throughput between log points."""

  def __init__(
      self,
      start_step: int,
      tokens_per_step: int,
      flops_per_step: float,
      num_devices: int,
      peak_flops: Optional[float],
      learning_rate: Callable[[int], float],
  ):
    self._pending: list[tuple[int, Any]] = []
    self._tokens = tokens_per_step
    self._flops = flops_per_step
    self._devices = num_devices
    self._peak = peak_flops
    self._lr = learning_rate
    self._last_time = time.perf_counter()
    self._last_step = start_step
    self._excluded = 0.0
    self._excluded_steps = 0

  def add(self, step: int, metrics: Any) -> None:
    """Keeps step's metrics (device arrays); nothing waits."""
    self._pending.append((step, metrics))

  def exclude(self, seconds: float) -> None:
    """Time (evaluation, checkpointing) that is not training."""
    self._excluded += seconds

  def exclude_step(self, seconds: float) -> None:
    """A whole step left out of the rates: one that compiled its program."""
    self._excluded += seconds
    self._excluded_steps += 1

  def fetch(
      self, finite_keys: tuple[str, ...]
  ) -> tuple[dict[str, float], Optional[tuple[int, str, float]]]:
    """Fetches every pending step's metrics in one transfer.

    Returns:
      (the latest step's metrics as floats, or {} when none are pending;
      (step, key, value) of the first non-finite `finite_keys` entry, or
      None).
    """
    if not self._pending:
      return {}, None
    steps = [s for s, _ in self._pending]
    host = jax.device_get([m for _, m in self._pending])
    self._pending = []
    for step, m in zip(steps, host):
      for k in finite_keys:
        if not np.isfinite(m[k]):
          return {}, (step, k, float(m[k]))
    return {k: float(v) for k, v in host[-1].items()}, None

  def rates(self, step: int) -> dict[str, float]:
    """Throughput since the previous call (call after `fetch`)."""
    now = time.perf_counter()
    steps = max(step - self._last_step - self._excluded_steps, 1)
    seconds = max(now - self._last_time - self._excluded, 1e-9)
    self._last_time, self._last_step, self._excluded = now, step, 0.0
    self._excluded_steps = 0
    step_time = seconds / steps
    flops_per_device = self._flops / step_time / self._devices
    out = {
        "step_time_s": step_time,
        "tokens_per_s": self._tokens / step_time,
        "tflops_per_device": flops_per_device / 1e12,
        "lr": float(self._lr(step - 1)),
    }
    if self._peak:
      out["mfu"] = flops_per_device / self._peak
    return out
