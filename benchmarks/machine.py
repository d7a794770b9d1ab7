# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""What machine a benchmark ran on, recorded with every result.

Speed differs by CPU vendor and model (our step's lead over the PyTorch
port reversed between an AMD EPYC and an Intel Xeon), so every result
names the CPU it was measured on.
"""

import os
import platform


def cpu_model() -> str:
  """The CPU's model name (/proc/cpuinfo), or the platform's best guess."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def describe() -> dict:
  """{cpu, cpu_count, machine, python}: the fields every result carries."""
  return {
      "cpu": cpu_model(),
      "cpu_count": os.cpu_count(),
      "machine": platform.machine(),
      "python": platform.python_version(),
  }
