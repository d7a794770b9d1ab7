# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Metric writing: JSON lines, TensorBoard event files, a progress line.

TensorBoard event files are written in the caller's thread (event_file.py:
a failed write raises here instead of hanging a writer thread). Only
process 0 writes.
"""

import json
import math
import time
from typing import Any, Mapping, Optional


from routing_jax.training import event_file
from routing_jax.training import workdir as workdir_lib

JSONL_FILE = "metrics.jsonl"

# Paper units: how a per-token loss in nats is reported.
UNITS = {
    "byte": ("bits_per_byte", lambda nats, _: nats / math.log(2)),
    "subpixel": ("bits_per_dim", lambda nats, _: nats / math.log(2)),
    "word": ("perplexity", lambda nats, _: math.exp(min(nats, 50.0))),
    # Per-token losses scaled by the eval split's tokens per unit.
    "subword": (
        "word_perplexity",
        lambda nats, tpw: math.exp(min(nats * (tpw or 1.0), 50.0)),
    ),
    "subword_byte": (
        "bits_per_byte",
        lambda nats, tpb: nats * (tpb or 1.0) / math.log(2),
    ),
    "token": ("perplexity", lambda nats, _: math.exp(min(nats, 50.0))),
}


def paper_metric(
    unit: str, nats: float, tokens_per_unit: Optional[float] = None
) -> tuple[str, float]:
  """(name, value) of a per-token loss in the paper's unit for `unit`."""
  name, fn = UNITS.get(unit, UNITS["token"])
  return name, fn(float(nats), tokens_per_unit)


class MetricWriter:
  """Writes scalars to `metrics.jsonl` and a TensorBoard event file.

  The workdir may be a URL (see `routing_jax.training.workdir`). Does nothing on
  processes other than 0 (`enabled=False`).
  """

  def __init__(self, workdir, enabled: bool = True):
    self.enabled = enabled
    if not enabled:
      return
    path = workdir_lib.resolve(workdir)
    path.mkdir(parents=True, exist_ok=True)
    # On object storage every flush rewrites a whole object: flush at most
    # once a minute there, locally after every write.
    remote = workdir_lib.is_url(path)
    self._flush_every_s = 60.0 if remote else 0.0
    self._last_flush = time.monotonic()
    self._jsonl = workdir_lib.AppendFile(path / JSONL_FILE)
    tb = path / "tensorboard"
    self._events = event_file.EventFile(tb)

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in scalars.items()}
    self._jsonl.write(
        (json.dumps({"step": int(step), **clean}) + "\n").encode("utf-8")
    )
    for tag, value in clean.items():
      self._events.add_scalar(tag, value, int(step))
    if time.monotonic() - self._last_flush >= self._flush_every_s:
      self._jsonl.flush()
      self._events.flush()
      self._last_flush = time.monotonic()

  def write_text(self, step: int, tag: str, text: str) -> None:
    """Text (e.g. a sample) for TensorBoard's Text tab, as a code block."""
    if self.enabled:
      fence = "`" * 3
      body = text.replace(fence, "'" * 3)
      self._events.add_text(tag, f"{fence}\n{body}\n{fence}", step)

  def write_hparams(self, config: Mapping[str, Any]) -> None:
    """The config as TensorBoard hparams ("section.field": value)."""
    if not self.enabled:
      return
    flat = {}
    for section, fields in config.items():
      if not isinstance(fields, Mapping):
        flat[section] = fields
        continue
      for name, value in fields.items():
        flat[f"{section}.{name}"] = value
    simple = {
        k: v if isinstance(v, (bool, int, float, str)) else str(v)
        for k, v in flat.items()
    }
    self._events.add_hparams(simple, ["eval/loss_nats", "train/loss_nats"])

  def close(self) -> None:
    """Writes everything out (call it, or metrics may be lost)."""
    if self.enabled:
      self._jsonl.close()
      self._events.close()


def truncate_jsonl(path, step: int) -> None:
  """Drops the rows of a metrics file past `step` (call on process 0).

  A run killed after its last checkpoint wrote rows for steps that the
  resumed run does again; without this, those steps appear twice. A row
  cut short by the kill is dropped too. The file is replaced atomically (a
  new file, then a rename), so a kill during this loses nothing.

  Args:
    path: the metrics.jsonl file (local path or URL); absent is fine.
    step: the step the run resumes from (0 on a fresh start).
  """
  path = workdir_lib.resolve(path)
  if not path.exists():
    return
  lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
  keep = []
  for line in lines:
    try:
      row_step = json.loads(line)["step"]
    except (ValueError, TypeError, KeyError):
      continue  # a row cut short, or not a row
    if isinstance(row_step, int) and row_step <= step:
      keep.append(line + "\n")
  if len(keep) == len(lines):
    return
  tmp = path.parent / (path.name + ".tmp")
  tmp.write_bytes("".join(keep).encode("utf-8"))
  tmp.replace(path)


def progress_line(
    step: int,
    total: int,
    loss_name: str,
    loss: float,
    tokens_per_s: float,
    elapsed: float,
    done_steps: int,
    perf: Optional[Mapping[str, float]] = None,
) -> str:
  """ "step 120/1500 | bits_per_byte 2.314 | 5.1k tok/s | ETA 4m12s".

  perf: optional step_time_s, tflops_per_device, mfu and lr, shown before
  the ETA as "0.412 s/step | 12.3 TFLOP/s/device | MFU 31.2% | lr 1.0e-02".
  """
  eta = (total - step) * elapsed / max(done_steps, 1)
  mins, secs = divmod(int(eta), 60)
  hours, mins = divmod(mins, 60)
  eta_s = f"{hours}h{mins:02d}m" if hours else f"{mins}m{secs:02d}s"
  extra = ""
  if perf:
    extra = (
        f"{perf['step_time_s']:.3f} s/step | "
        f"{perf['tflops_per_device']:.3g} TFLOP/s/device | "
    )
    if "mfu" in perf:
      extra += f"MFU {100 * perf['mfu']:.1f}% | "
    extra += f"lr {perf['lr']:.2e} | "
  return (
      f"step {step}/{total} | {loss_name} {loss:.4f} | "
      f"{tokens_per_s / 1000:.1f}k tok/s | {extra}ETA {eta_s}"
  )
