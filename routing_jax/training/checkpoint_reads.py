# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Reading one committed checkpoint step on every process, with retries.

`read_agreed` is what `Checkpointer.restore` does for each step it tries:
every process reads the step's three items (state, data, meta) and checks
the state against the checksums in meta; the processes exchange outcomes,
and any failure on any process is tried again after each of RETRY_DELAYS_S
(on object storage a missing or short read can pass). Only a step that
fails every try is judged, and all processes reach the same verdict:

  OK         every process holds the step, checksums equal.
  CORRUPT    it failed every try, and not only with storage errors: the
             step is damaged (or the target does not fit it; the caller
             tells the two apart by trying an older step).
  TRANSIENT  only storage errors (network, timeouts): no verdict on the
             step.
  MISMATCH   the step's stored shapes differ from the target's (another
             config): known from its metadata at once, so never retried and
             no array is read.
"""

import dataclasses
import json
import logging as std_logging
import sys
import time
from typing import Any

from absl import logging
from etils import epath
import jax
import numpy as np
import orbax.checkpoint as ocp

from routing_jax import multihost
from routing_jax import storage_errors
from routing_jax.training import checksums

# A failed read of a step is tried again after these delays.
RETRY_DELAYS_S = (1.0, 4.0)
# Outcomes of reading a step (FAILED: an error classify_error does not
# recognise; judged like CORRUPT once it persists).
OK, CORRUPT, TRANSIENT, FAILED, MISMATCH = 0, 1, 2, 3, 4


class ChecksumError(ValueError):
  """A restored array differs from the checksum recorded when it was saved."""


class TargetMismatchError(ValueError):
  """The stored arrays have other shapes than the restore target's."""


def classify_error(error: BaseException) -> int:
  """What one failed read of a committed step says about the step.

  CORRUPT: recognised damage (a missing file or item, a truncated file,
    invalid JSON, a checksum mismatch).
  TRANSIENT: an I/O error of the storage (network, timeouts).
  FAILED: anything else (a damaged file Orbax misreads, e.g. a missing
    _METADATA, or a target that does not fit).

  Orbax wraps tensorstore's errors (e.g. in a plain Exception naming the
  array index), so the chain of causes is searched.
  """
  if isinstance(error, TargetMismatchError):
    return MISMATCH
  # Tensorstore reports errors as ValueError("<STATUS>: ..."): a damage
  # status means the stored bytes are missing or damaged (unless a retry
  # reads them), a transient one that the storage is not reachable.
  for e in storage_errors.causes(error):
    status = storage_errors.status_of(e)
    if isinstance(e, (json.JSONDecodeError, FileNotFoundError, ChecksumError)):
      return CORRUPT
    if isinstance(e, KeyError) and "not found in the checkpoint" in str(e):
      return CORRUPT  # Orbax: a whole item is missing.
    if isinstance(e, ValueError) and status in storage_errors.DAMAGE_STATUSES:
      return CORRUPT
    if isinstance(e, OSError) or status in storage_errors.TRANSIENT_STATUSES:
      return TRANSIENT
  return FAILED


def one_line(error: BaseException, limit: int = 300) -> str:
  """`Type: message` on one line (Orbax's messages span many)."""
  text = " ".join(f"{type(error).__name__}: {error}".split())
  return text if len(text) <= limit else text[: limit - 3] + "..."


def _path_names(path) -> tuple[str, ...]:
  """A key path as names: a dataclass field, dict key or index alike."""
  return tuple(
      str(getattr(k, "name", getattr(k, "key", getattr(k, "idx", k))))
      for k in path
  )


def check_shapes(directory: epath.Path, step: int, target: Any) -> None:
  """Raises TargetMismatchError if stored shapes differ from target's.

  Reads only the step's small tree metadata. Metadata that cannot be read
  (damage) is left to `read_step` to judge.
  """
  try:
    stored = ocp.StandardCheckpointHandler().metadata(
        directory / str(step) / "state"
    )
  # Damaged metadata fails in many ways; read_step reports it.
  except Exception:  # pylint: disable=broad-exception-caught
    return
  shapes = {
      _path_names(path): tuple(leaf.shape)
      for path, leaf in jax.tree_util.tree_leaves_with_path(
          getattr(stored, "tree", stored)
      )
      if hasattr(leaf, "shape")
  }
  diffs = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(target):
    if jax.numpy.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      continue  # stored as its key data, with an extra axis
    saved = shapes.get(_path_names(path))
    if saved is not None and saved != tuple(leaf.shape):
      diffs.append(f"{jax.tree_util.keystr(path)} {saved} != {leaf.shape}")
  if diffs:
    raise TargetMismatchError(
        f"{len(diffs)} array(s) of step {step} were saved with other shapes"
        f" than this config gives (saved != now): {'; '.join(diffs[:3])}"
    )


def _orbax_noise(record: std_logging.LogRecord) -> bool:
  """Whether an asyncio log record is a failed read's leftover task."""
  text = record.getMessage()
  if "Task exception was never retrieved" not in text:
    return False
  error = record.exc_info[1] if record.exc_info else None
  return "orbax" in text or (
      error is not None and classify_error(error) in (CORRUPT, TRANSIENT)
  )


def _disk_full_noise(record: std_logging.LogRecord) -> bool:
  """Whether a log record is Orbax reporting a write to a full disk."""
  if "orbax" not in record.pathname:
    return False
  text = record.getMessage()
  if record.exc_info and record.exc_info[1] is not None:
    text += str(record.exc_info[1])
  return any(
      s in text
      for s in ("No space left on device", "RESOURCE_EXHAUSTED", "ENOSPC")
  )


def quiet_orbax_leftovers() -> None:
  """Silences what a failed Orbax read or save leaves behind, once per
  process (the Checkpointer calls it when it opens).

  When one array of a step cannot be read, Orbax abandons the reads of the
  others: asyncio logs each abandoned task's error with its traceback (in
  a truncated step, one per array), and tensorstore callbacks that finish
  after Orbax closed its event loop print "Event loop is closed"
  tracebacks. Hundreds of lines would bury the one-line verdict that
  `read_agreed` and `Checkpointer.restore` give for the step.
  """
  if getattr(quiet_orbax_leftovers, "done", False):
    return
  quiet_orbax_leftovers.done = True
  std_logging.getLogger("asyncio").addFilter(lambda r: not _orbax_noise(r))
  # A save that fails on a full disk: Orbax logs the error with a traceback
  # from each of its writer threads; the one line the CLIs print says it.
  std_logging.getLogger("absl").addFilter(lambda r: not _disk_full_noise(r))
  previous = sys.unraisablehook

  closed = lambda e: isinstance(e, RuntimeError) and (
      str(e) == "Event loop is closed"
  )

  def hook(unraisable):
    if not closed(unraisable.exc_value):
      previous(unraisable)

  sys.unraisablehook = hook
  # Tensorstore's callbacks report the same error through sys.excepthook
  # (PyErr_Print), from its own threads.
  previous_excepthook = sys.excepthook

  def excepthook(kind, value, traceback):
    if not closed(value):
      previous_excepthook(kind, value, traceback)

  sys.excepthook = excepthook


def read_step(
    directory: epath.Path, step: int, target: Any, partial: bool = False
):
  """(state, data, meta) of a step, read on this process only.

  partial: `target` is a state dataclass whose None fields are not read
  (e.g. the optimizer state, for inference); they stay None.
  """
  quiet_orbax_leftovers()
  if partial:
    fields = {
        f.name: getattr(target, f.name)
        for f in dataclasses.fields(target)
        if getattr(target, f.name) is not None
    }
    state_args = ocp.args.PyTreeRestore(
        item=fields,
        restore_args=jax.tree.map(
            lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), fields
        ),
        partial_restore=True,
    )
  else:
    state_args = ocp.args.StandardRestore(target)
  # The handler, not the manager: the manager's restore ends in a barrier
  # across processes, which a process whose read failed never reaches.
  # Processes agree on the outcome in `read_agreed` instead.
  handler = ocp.CompositeCheckpointHandler()
  try:
    restored = handler.restore(
        directory / str(step),
        args=ocp.args.Composite(
            state=state_args,
            data=ocp.args.JsonRestore(),
            meta=ocp.args.JsonRestore(),
        ),
    )
  finally:
    handler.close()
  if not isinstance(restored.meta, dict):
    raise json.JSONDecodeError("meta item is not a JSON dict", "", 0)
  state = target.replace(**restored.state) if partial else restored.state
  return state, restored.data, restored.meta


def _verify(step: int, result, partial: bool = False) -> str:
  """Why the restored state differs from its checksums ("" if it does not).

  A collective: every process calls it once all of them hold the step.
  """
  state, _, meta = result
  expected = meta.get("checksums")
  if expected is None:  # Saved before checksums were recorded.
    return ""
  actual = checksums.state_checksums(state)
  if partial:  # only the arrays read
    expected = {k: v for k, v in expected.items() if k in actual}
  bad = checksums.mismatches(expected, actual)
  if not bad:
    return ""
  return one_line(
      ChecksumError(
          f"step {step}: {len(bad)} array(s) differ from the checksums"
          f" recorded at save time ({', '.join(bad[:5])})"
      )
  )


def read_agreed(
    directory: epath.Path, step: int, target: Any, partial: bool = False
):
  """(outcome, message, (state, data, meta) or None), the same everywhere.

  Every process must call it. A process that read the step keeps it while
  another retries; a checksum mismatch makes all of them read again.

  Args:
    directory: the checkpoint directory.
    step: the committed step to read.
    target: abstract restore target (ShapeDtypeStructs with shardings).
    partial: read only the target's non-None fields (see `read_step`).

  Returns:
    OK with the step's items, or CORRUPT, TRANSIENT or MISMATCH (see the
    module docstring) with a one-line message and None.
  """
  delays = list(RETRY_DELAYS_S)
  result, outcome, message = None, OK, ""
  while True:
    if result is None:
      try:
        check_shapes(directory, step, target)
        outcome, message, result = (
            OK,
            "",
            read_step(directory, step, target, partial),
        )
      # Orbax/tensorstore raise many types (ValueError, KeyError, OSError,
      # JSONDecodeError, plain Exception); classify_error sorts them.
      except Exception as e:  # pylint: disable=broad-exception-caught
        outcome, message, result = classify_error(e), one_line(e), None
    outcomes = multihost.allgather(np.int32(outcome))
    if (outcomes == OK).all():
      message = _verify(step, result, partial)
      if not message:
        return OK, "", result
      outcomes, result = np.array([CORRUPT]), None
    bad = [int(i) for i in np.flatnonzero(outcomes != OK)]
    message = message or f"failed on process(es) {bad}"
    if (outcomes == MISMATCH).any():
      return MISMATCH, message, None
    if not delays:
      storage_only = ((outcomes == OK) | (outcomes == TRANSIENT)).all()
      return (TRANSIENT if storage_only else CORRUPT), message, None
    delay = delays.pop(0)
    logging.warning(
        "Reading checkpoint step %d in %s failed (%s); trying again in %.1fs.",
        step,
        directory,
        message,
        delay,
    )
    time.sleep(delay)
