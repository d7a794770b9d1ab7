# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""A TensorBoard event file written in the caller's thread.

tensorboardX's SummaryWriter writes from a background thread fed by a queue
of 10 events. When a write fails (a full disk: ENOSPC) that thread dies and
the next `queue.put` blocks forever: training hangs, and SIGTERM only sets a
flag the blocked loop never reads. Here every record is written (and
flushed, at the caller's pace) in the calling thread, so a failed write
raises where the training loop can stop cleanly. The records are the same:
TFRecord framing with masked CRC32C around serialized `Event` protos.
"""

import socket
import struct
import time
from typing import Any, Mapping, Sequence

from tensorboardX import summary
from tensorboardX.proto import event_pb2
from tensorboardX.record_writer import masked_crc32c

from routing_jax.training import workdir as workdir_lib


class EventFile:
  """One `events.out.tfevents.<time>.<host>` file in `logdir` (path or URL).

  Writes go through `workdir.AppendFile` (a local file, or an object
  rewritten whole on each flush); nothing reaches storage before `flush`.
  """

  def __init__(self, logdir: Any):
    directory = workdir_lib.resolve(logdir)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}"
    self.path = directory / name
    self._file = workdir_lib.AppendFile(self.path)
    self._write(
        event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")
    )

  def _write(self, event: event_pb2.Event) -> None:
    data = event.SerializeToString()
    header = struct.pack("<Q", len(data))
    self._file.write(
        header
        + struct.pack("<I", masked_crc32c(header))
        + data
        + struct.pack("<I", masked_crc32c(data))
    )

  def add_scalar(self, tag: str, value: float, step: int) -> None:
    self._write(
        event_pb2.Event(
            wall_time=time.time(),
            step=int(step),
            summary=summary.scalar(tag, float(value)),
        )
    )

  def add_text(self, tag: str, text: str, step: int) -> None:
    """Text under TensorBoard's Text tab (markdown)."""
    self._write(
        event_pb2.Event(
            wall_time=time.time(),
            step=int(step),
            summary=summary.text(tag, text),
        )
    )

  def add_hparams(
      self, hparams: Mapping[str, Any], metrics: Sequence[str]
  ) -> None:
    """The run's hyperparameters for TensorBoard's HParams tab, with the
    scalar tags it should show next to them."""
    for part in summary.hparams(dict(hparams), {m: 0.0 for m in metrics}):
      self._write(event_pb2.Event(wall_time=time.time(), summary=part))

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    self._file.close()
