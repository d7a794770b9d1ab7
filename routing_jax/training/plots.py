# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The loss curve of a run: loss_curve.png from its metrics.jsonl."""

import io
import json
import math
from typing import Optional

from routing_jax.training import workdir as workdir_lib


def plot_losses(workdir: str) -> Optional[str]:
  """Writes loss_curve.png from metrics.jsonl; returns its path."""
  workdir = workdir_lib.resolve(workdir)
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return None
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  rows = []
  for line in path.read_text().splitlines():
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      continue  # A line cut short by a killed run.
  fig, ax = plt.subplots(figsize=(6, 4))
  for key, label in (
      ("train/loss_nats", "train"),
      ("eval/loss_nats", "validation"),
  ):
    # A resumed run repeats the steps after its checkpoint: the last wins.
    pts = sorted(
        {r["step"]: r[key] / math.log(2) for r in rows if key in r}.items()
    )
    if pts:
      ax.plot(*zip(*pts), label=label, marker="." if "eval" in key else None)
  ax.set_xlabel("step")
  ax.set_ylabel("loss (bits per token)")
  ax.legend()
  ax.grid(alpha=0.3)
  out = workdir / "loss_curve.png"
  fig.tight_layout()
  png = io.BytesIO()  # matplotlib cannot write to a URL
  fig.savefig(png, format="png", dpi=100)
  plt.close(fig)
  out.write_bytes(png.getvalue())
  return str(out)
