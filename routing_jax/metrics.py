"""Metric writing: JSON lines, TensorBoard event files, a progress line.

TensorBoard event files are written directly (TFRecord framing with masked
CRC-32C, hand-encoded `Event`/`Summary` protos), so neither tensorflow nor
tensorboard is a dependency. Only process 0 writes.
"""

import json
import math
import os
import socket
import struct
import time
from typing import Mapping, Optional

# Paper units: how a per-token loss in nats is reported.
UNITS = {
    "byte": ("bits_per_byte", lambda nats, _: nats / math.log(2)),
    "subpixel": ("bits_per_dim", lambda nats, _: nats / math.log(2)),
    "word": ("perplexity", lambda nats, _: math.exp(min(nats, 50.0))),
    "subword": ("word_perplexity",
                lambda nats, tpw: math.exp(min(nats * (tpw or 1.0), 50.0))),
    "token": ("perplexity", lambda nats, _: math.exp(min(nats, 50.0))),
}


def paper_metric(unit: str, nats: float,
                 tokens_per_word: Optional[float] = None) -> tuple[str, float]:
  """(name, value) of a per-token loss in the paper's unit for `unit`."""
  name, fn = UNITS.get(unit, UNITS["token"])
  return name, fn(float(nats), tokens_per_word)


# ---- TensorBoard event files ------------------------------------------------

def _crc32c_table():
  table = []
  for i in range(256):
    c = i
    for _ in range(8):
      c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    table.append(c)
  return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  c = 0xFFFFFFFF
  for b in data:
    c = _CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
  return c ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
  c = crc32c(data)
  return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
  out = bytearray()
  while True:
    b = n & 0x7F
    n >>= 7
    if n:
      out.append(b | 0x80)
    else:
      out.append(b)
      return bytes(out)


def _field(num: int, wire: int, payload: bytes) -> bytes:
  return _varint((num << 3) | wire) + payload


def _bytes_field(num: int, data: bytes) -> bytes:
  return _field(num, 2, _varint(len(data)) + data)


def encode_event(wall_time: float, step: int = 0,
                 scalars: Optional[Mapping[str, float]] = None,
                 file_version: Optional[str] = None) -> bytes:
  """An `Event` proto: wall_time=1 (double), step=2, file_version=3,
  summary=5 {value=1 {tag=1, simple_value=2 (float)}}."""
  msg = _field(1, 1, struct.pack("<d", wall_time))
  msg += _field(2, 0, _varint(int(step) & ((1 << 64) - 1)))
  if file_version is not None:
    msg += _bytes_field(3, file_version.encode())
  if scalars:
    summary = b"".join(
        _bytes_field(1, _bytes_field(1, tag.encode())
                     + _field(2, 5, struct.pack("<f", float(v))))
        for tag, v in scalars.items())
    msg += _bytes_field(5, summary)
  return msg


def frame_record(data: bytes) -> bytes:
  header = struct.pack("<Q", len(data))
  return (header + struct.pack("<I", masked_crc(header)) + data
          + struct.pack("<I", masked_crc(data)))


def read_records(path: str) -> list[bytes]:
  """Reads and CRC-checks the records of an event file (for tests)."""
  out = []
  with open(path, "rb") as f:
    while True:
      header = f.read(8)
      if not header:
        return out
      (length,) = struct.unpack("<Q", header)
      if struct.unpack("<I", f.read(4))[0] != masked_crc(header):
        raise ValueError(f"{path}: bad length CRC")
      data = f.read(length)
      if struct.unpack("<I", f.read(4))[0] != masked_crc(data):
        raise ValueError(f"{path}: bad data CRC")
      out.append(data)


class MetricWriter:
  """Writes scalars to `metrics.jsonl` and a TensorBoard event file.

  Does nothing on processes other than 0 (`enabled=False`).
  """

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a",
                       encoding="utf-8")
    tb = os.path.join(workdir, "tensorboard")
    os.makedirs(tb, exist_ok=True)
    name = (f"events.out.tfevents.{int(time.time())}."
            f"{socket.gethostname()}.{os.getpid()}")
    self._events = open(os.path.join(tb, name), "ab")
    self._events.write(frame_record(
        encode_event(time.time(), 0, file_version="brain.Event:2")))

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({"step": int(step), **clean}) + "\n")
    self._jsonl.flush()
    self._events.write(frame_record(encode_event(time.time(), step, clean)))
    self._events.flush()

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._events.close()


def progress_line(step: int, total: int, loss_name: str, loss: float,
                  tokens_per_s: float, elapsed: float, done_steps: int,
                  perf: Optional[Mapping[str, float]] = None) -> str:
  """"step 120/1500 | bits_per_byte 2.314 | 5.1k tok/s | ETA 4m12s".

  perf: optional step_time_s, tflops_per_device, mfu and lr, shown before
  the ETA as "0.412 s/step | 12.3 TFLOP/s/device | MFU 31.2% | lr 1.0e-02".
  """
  eta = (total - step) * elapsed / max(done_steps, 1)
  mins, secs = divmod(int(eta), 60)
  hours, mins = divmod(mins, 60)
  eta_s = f"{hours}h{mins:02d}m" if hours else f"{mins}m{secs:02d}s"
  extra = ""
  if perf:
    extra = (f"{perf['step_time_s']:.3f} s/step | "
             f"{perf['tflops_per_device']:.3g} TFLOP/s/device | ")
    if "mfu" in perf:
      extra += f"MFU {100 * perf['mfu']:.1f}% | "
    extra += f"lr {perf['lr']:.2e} | "
  return (f"step {step}/{total} | {loss_name} {loss:.4f} | "
          f"{tokens_per_s / 1000:.1f}k tok/s | {extra}ETA {eta_s}")
