# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Orbax checkpoints of the train state: keep-N, resume, preemption.

A checkpoint step directory holds three items:
  state: the train-state pytree (StandardSave; any sharding, any mesh).
  data:  the data-iterator position, a small JSON dict.
  meta:  a small JSON dict (config hash, step, wall time, ...).

Saves are atomic: Orbax writes `<step>.orbax-checkpoint-tmp` and renames it
to `<step>` only once every item is complete, so a process killed mid-save
leaves a tmp directory that listing and restore ignore (and the next manager
cleans up). A *committed* step can still be damaged afterwards (a truncated or
deleted file); `restore` then falls back to the previous step and moves the
damaged one to `<directory>/corrupted/`. With several processes they agree
on the step to restore; a transient read error never moves a checkpoint.

Train-loop use:

  ckpt = checkpointing.Checkpointer(workdir / "checkpoints", keep=3,
                                    save_every=1000,
                                    metadata={"config_hash": h})
  restored = ckpt.restore(abstract_state)       # None on a fresh workdir
  if restored is not None:
    state, data_state, step = restored
  with checkpointing.PreemptionHandler() as preemption:
    for step in ...:
      state = train_step(state, batch)
      ckpt.save(step, state, iterator_position)  # every save_every steps
      if preemption.should_stop(step):
        ckpt.save(step, state, iterator_position, force=True)
        break
  ckpt.close()                                   # waits for async saves
"""

from collections.abc import Mapping
import json
import os
import signal
import threading
import time
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from routing_jax import multihost

CORRUPTED_SUBDIR = "corrupted"
# A read that fails with a transient error is retried after these delays.
TRANSIENT_RETRY_DELAYS_S = (1.0, 4.0)
# Outcomes of reading a step.
_OK, _CORRUPT, _TRANSIENT, _FAILED = 0, 1, 2, 3
# Tensorstore reports errors as ValueError("<STATUS>: ..."). These statuses
# mean the stored bytes are missing or damaged; others (UNAVAILABLE,
# DEADLINE_EXCEEDED, ...) may pass.
_DAMAGE_STATUSES = ("NOT_FOUND", "OUT_OF_RANGE", "DATA_LOSS")
_TRANSIENT_STATUSES = (
    "UNAVAILABLE",
    "DEADLINE_EXCEEDED",
    "RESOURCE_EXHAUSTED",
    "ABORTED",
    "CANCELLED",
)


class CheckpointRestoreError(RuntimeError):
  """No checkpoint in the directory could be restored."""


def classify_error(error: BaseException) -> int:
  """How a failed read of a committed step is treated.

  _CORRUPT: recognised damage (a missing file or item, a truncated file,
    invalid JSON): the step is moved aside once an older one restores.
  _TRANSIENT: an I/O error that may pass (network, timeouts): retried, and
    never a reason to move the step.
  _FAILED: anything else (e.g. a target that does not fit): not retried,
    not moved.

  Orbax wraps tensorstore's errors (e.g. in a plain Exception naming the
  array index), so the chain of causes is searched.
  """
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    status = str(error).split(":", 1)[0].strip()
    if isinstance(error, (json.JSONDecodeError, FileNotFoundError)):
      return _CORRUPT
    if isinstance(error, KeyError) and "not found in the checkpoint" in str(
        error
    ):
      return _CORRUPT  # Orbax: a whole item is missing.
    if isinstance(error, ValueError) and status in _DAMAGE_STATUSES:
      return _CORRUPT
    if isinstance(error, OSError) or status in _TRANSIENT_STATUSES:
      return _TRANSIENT
    error = error.__cause__ or error.__context__
  return _FAILED


def _positive_int(name: str, value: Any) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"{name}={value!r} must be an int.")
  if value < 1:
    raise ValueError(f"{name}={value} must be >= 1.")
  return int(value)


def _json_dict(name: str, value: Any) -> dict[str, Any]:
  """Checks that value is a JSON-serialisable dict, for a clear error early."""
  value = {} if value is None else value
  if not isinstance(value, Mapping):
    raise ValueError(f"{name} must be a dict, got {type(value).__name__}.")
  try:
    return json.loads(json.dumps(dict(value)))
  except (TypeError, ValueError) as e:
    raise ValueError(
        f"{name} must be JSON-serialisable (plain int/float/str/list/dict;"
        f" convert numpy scalars with int()): {e}"
    ) from e


def abstract_target(tree: Any) -> Any:
  """Turns arrays into ShapeDtypeStructs keeping their shardings.

  Args:
    tree: pytree of jax.Arrays and/or jax.ShapeDtypeStructs.

  Returns:
    A pytree of ShapeDtypeStructs usable as a restore target.

  Raises:
    ValueError: if a leaf has no sharding (restoring needs to know where each
      shard goes; this is what makes restoring onto another mesh work).
  """

  def one(path, x):
    sharding = getattr(x, "sharding", None)
    if sharding is None:
      raise ValueError(
          f"restore target {jax.tree_util.keystr(path)} has no sharding; give"
          " jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(...))."
      )
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

  return jax.tree_util.tree_map_with_path(one, tree)


class Checkpointer:
  """Saves and restores (state, data position, meta) with Orbax.

  All processes must call every method (Orbax synchronises them and writes
  shared files from the primary process only).
  """

  def __init__(
      self,
      directory: str | os.PathLike[str],
      keep: int = 3,
      save_every: int = 1000,
      async_save: bool = True,
      metadata: Mapping[str, Any] | None = None,
  ):
    """Opens (creating if needed) a checkpoint directory.

    Args:
      directory: where step directories live; local path or a URL that
        etils.epath understands (gs://...).
      keep: how many of the newest checkpoints to keep (>= 1; with 1 there is
        nothing to fall back to if the newest is damaged).
      save_every: `save` writes when step % save_every == 0 (or force=True).
      async_save: write in a background thread; `save` returns once the
        arrays are copied off the devices. Call `wait` or `close` before
        reading the files or exiting.
      metadata: small JSON dict stored in every checkpoint's "meta" item
        (e.g. a config hash), together with the step and the wall time.
    """
    self._keep = _positive_int("keep", keep)
    self._save_every = _positive_int("save_every", save_every)
    self._metadata = _json_dict("metadata", metadata)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=self._keep,
        enable_async_checkpointing=async_save,
        create=True,
        # Removes `<step>.orbax-checkpoint-tmp` left by a process that died
        # mid-save.
        cleanup_tmp_directories=True,
    )
    directory = os.fspath(directory)
    if "://" not in directory:
      # Orbax's tensorstore specs need absolute local paths.
      directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(directory, options=options)

  @property
  def directory(self):
    return self._manager.directory

  @property
  def save_every(self) -> int:
    return self._save_every

  def all_steps(self) -> list[int]:
    """Committed steps, oldest first (in-flight async saves included)."""
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    """The newest committed step, or None without checkpoints."""
    return self._manager.latest_step()

  def save(
      self,
      step: int,
      state: Any,
      data_state: Mapping[str, Any] | None = None,
      force: bool = False,
      meta: Mapping[str, Any] | None = None,
  ) -> bool:
    """Saves if step % save_every == 0 or force, unless step is saved already.

    Args:
      step: the training step (>= 0) the state belongs to.
      state: pytree of jax.Arrays (any sharding); only save finite states.
      data_state: JSON dict with the input pipeline position, or None.
      force: save regardless of save_every (final or preemption save).
      meta: extra JSON entries for this checkpoint's "meta" item.

    Returns:
      Whether a save was started.
    """
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
      raise ValueError(f"step={step!r} must be an int.")
    if step < 0:
      raise ValueError(f"step={step} must be >= 0.")
    step = int(step)
    if not force and step % self._save_every:
      return False
    if step in self._manager.all_steps():
      # E.g. a preemption right after a regular save of the same step.
      logging.info("Checkpoint for step %d already exists; not saving.", step)
      return False
    data_state = _json_dict("data_state", data_state)
    meta = {
        **self._metadata,
        **_json_dict("meta", meta),
        "step": step,
        "time": time.time(),
    }
    start = time.perf_counter()
    saved = self._manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state),
            meta=ocp.args.JsonSave(meta),
        ),
        force=True,  # We already decided; skip Orbax's interval policy.
    )
    logging.info(
        "Checkpoint save of step %d started in %.2fs (%s).",
        step,
        time.perf_counter() - start,
        self.directory,
    )
    return saved

  def wait(self) -> None:
    """Blocks until every pending async save is committed."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def _restore_step(self, step: int, target: Any) -> tuple[Any, dict[str, Any]]:
    # The handler, not the manager: the manager's restore ends in a barrier
    # across processes, which a process whose read failed never reaches.
    # Processes agree on the outcome in `restore` instead.
    handler = ocp.CompositeCheckpointHandler()
    try:
      restored = handler.restore(
          self.directory / str(step),
          args=ocp.args.Composite(
              state=ocp.args.StandardRestore(target),
              data=ocp.args.JsonRestore(),
          ),
      )
    finally:
      handler.close()
    return restored.state, restored.data

  def _attempt(self, step: int, target: Any):
    """(outcome, message, (state, data) or None) of restoring `step` here.

    Transient errors are retried after TRANSIENT_RETRY_DELAYS_S.
    """
    delays = list(TRANSIENT_RETRY_DELAYS_S)
    while True:
      try:
        return _OK, "", self._restore_step(step, target)
      # Orbax/tensorstore raise many types (ValueError, KeyError, OSError,
      # JSONDecodeError, plain Exception); `classify_error` sorts them.
      except Exception as e:  # pylint: disable=broad-exception-caught
        outcome = classify_error(e)
        message = f"{type(e).__name__}: {str(e)[:500]}"
        if outcome != _TRANSIENT or not delays:
          return outcome, message, None
        delay = delays.pop(0)
        logging.warning(
            "Reading checkpoint step %d failed (%s); retrying in %.1fs.",
            step,
            message,
            delay,
        )
        time.sleep(delay)

  def restore(
      self, target: Any, step: int | None = None
  ) -> tuple[Any, dict[str, Any], int] | None:
    """Restores a checkpoint onto the shardings of target.

    With step=None, tries the newest committed step first; a step that fails
    to restore is logged as a warning and the previous one is tried. With
    several processes every process tries the same step and they exchange
    the outcome, so all of them restore the same step, or all fall back.
    Once an older step restores, the newer steps that failed with
    recognised damage (missing item or file, truncated file, bad JSON; see
    `classify_error`) are moved to `<directory>/corrupted/` so that the
    resumed run can save those step numbers again. A step that failed only
    with transient read errors (retried first) or unrecognised ones is left
    in place.

    Args:
      target: pytree of jax.ShapeDtypeStruct with shardings (or jax.Arrays),
        shaped like the saved state. Its shardings may be on a different mesh
        than the one that saved.
      step: restore exactly this step (no fallback), or None.

    Returns:
      (state, data_state, step), or None if the directory has no committed
      checkpoint at all (a fresh run).

    Raises:
      CheckpointRestoreError: checkpoints exist but none could be restored
        (nothing is moved in that case: the target may be what is wrong).
    """
    self._manager.wait_until_finished()
    target = abstract_target(target)
    if step is not None:
      outcome, message, result = self._attempt(step, target)
      if (multihost.allgather(np.int32(outcome)) != _OK).any():
        raise CheckpointRestoreError(
            f"Cannot restore step {step} from {self.directory}:"
            f" {message or 'it failed on another process'}"
        )
      return result[0], result[1], step

    local = set(self._manager.all_steps())
    newest = multihost.allgather(np.int64(max(local, default=-1)))
    candidate = int(newest.max())
    if candidate < 0:
      return None
    failed = []  # (step, recognised damage, message)
    while candidate >= 0:
      if candidate in local:
        outcome, message, result = self._attempt(candidate, target)
      else:  # Another process lists it: an inconsistent listing.
        outcome, message, result = _TRANSIENT, "not listed here", None
      older = max((s for s in local if s < candidate), default=-1)
      # One exchange per step: every outcome, and the next step to try.
      gathered = multihost.allgather(np.array([outcome, older], np.int64))
      outcomes = gathered[:, 0]
      if (outcomes == _OK).all():
        damaged = [f for f, corrupt, _ in failed if corrupt]
        if damaged:
          self._quarantine(damaged)
        logging.info(
            "Restored checkpoint step %d from %s.", candidate, self.directory
        )
        return result[0], result[1], candidate
      bad = [int(i) for i in np.flatnonzero(outcomes != _OK)]
      message = message or f"failed on process(es) {bad}"
      logging.warning(
          "Checkpoint step %d in %s cannot be restored (%s); trying the"
          " previous one.",
          candidate,
          self.directory,
          message,
      )
      failed.append((candidate, bool((outcomes == _CORRUPT).any()), message))
      candidate = int(gathered[:, 1].max())
    raise CheckpointRestoreError(
        f"None of the {len(failed)} checkpoints in {self.directory} could be"
        " restored (if all fail alike, the target's structure or shapes"
        " probably differ from the saved state): "
        + "; ".join(f"step {s}: {m}" for s, _, m in failed)
    )

  def read_meta(self, step: int | None = None) -> dict[str, Any]:
    """The "meta" JSON dict of a step (default: the latest)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointRestoreError(f"No checkpoints in {self.directory}.")
    restored = self._manager.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
    )
    return restored.meta

  def _quarantine(self, steps: list[int]) -> None:
    """Moves damaged step directories aside (primary process only)."""
    if jax.process_index() == 0:
      dest_dir = self.directory / CORRUPTED_SUBDIR
      dest_dir.mkdir(parents=True, exist_ok=True)
      for s in steps:
        dest = dest_dir / f"{s}-{int(time.time())}"
        (self.directory / str(s)).rename(dest)
        logging.warning("Moved damaged checkpoint step %d to %s.", s, dest)
    if jax.process_count() > 1:
      ocp.multihost.sync_global_processes("routing_jax_quarantine")
    self._manager.reload()


class PreemptionHandler:
  """Turns SIGTERM (preemption notice) into a flag the train loop polls.

  The signal handler only sets a flag; saving happens in the loop:

    with PreemptionHandler() as preemption:
      for step in ...:
        ...
        if preemption.should_stop(step):
          ckpt.save(step, state, data_state, force=True); ckpt.wait()
          break

  Multi-process: when jax.distributed is initialised with its preemption
  service (the default), JAX's own SIGTERM notifier propagates the notice to
  every host and `should_stop` returns True on all of them at the same step
  (orbax's reached_preemption). No Python handler is installed then, since
  it would replace JAX's. Without that service, processes agree with a small
  all-gather of the flag every step.
  """

  def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)):
    self._signals = tuple(signals)
    self._event = threading.Event()
    self._previous: dict[int, Any] = {}
    self._logged = False
    self._jax_sync = (
        jax.distributed.is_initialized()
        and jax.config.jax_enable_preemption_service
    )
    if self._jax_sync:
      return
    if threading.current_thread() is not threading.main_thread():
      raise RuntimeError(
          "PreemptionHandler must be created in the main thread (Python"
          " signal handlers can only be installed there)."
      )
    for sig in self._signals:
      self._previous[sig] = signal.signal(sig, self._on_signal)

  def _on_signal(self, signum, frame) -> None:
    del signum, frame  # Unused.
    # Only the flag: the handler interrupts arbitrary code, so logging or
    # saving here could deadlock; the train loop does the work.
    self._event.set()

  @property
  def signal_received(self) -> bool:
    """Whether this process received one of the signals."""
    return self._event.is_set()

  def should_stop(self, step: int) -> bool:
    """Whether every process should save and exit now; call every step.

    Args:
      step: the current step; all processes must pass the same sequence.

    Returns:
      True once a preemption notice arrived (and, on several processes, all
      of them agree on this step).
    """
    if self._jax_sync:
      stop = bool(ocp.multihost.reached_preemption(step))
    elif jax.process_count() == 1:
      stop = self._event.is_set()
    else:
      flags = multihost_utils.process_allgather(np.int32(self._event.is_set()))
      stop = bool(np.any(flags))
    if stop and not self._logged:
      self._logged = True
      logging.warning("Preemption notice: stopping at step %d.", step)
    return stop

  def close(self) -> None:
    """Re-installs the signal handlers that were active before."""
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)
    self._previous = {}

  def __enter__(self) -> "PreemptionHandler":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
