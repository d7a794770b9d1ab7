# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Orbax checkpoints of the train state: keep-N, resume, preemption.

A checkpoint step directory holds three items:
  state: the train-state pytree (StandardSave; any sharding, any mesh).
  data:  the data-iterator position, a small JSON dict.
  meta:  a small JSON dict (config hash, step, wall time, and a checksum of
         every array of the state: Orbax stores none; see checksums.py).

Saves are atomic: Orbax writes `<step>.orbax-checkpoint-tmp` and renames it
to `<step>` only once every item is complete, so a process killed mid-save
leaves a tmp directory that listing and restore ignore (and the next
writable Checkpointer cleans up).

A *committed* step can still be damaged afterwards (a deleted, truncated or
bit-flipped file). `restore` reads all three items of a step and checks the
state against its checksums; a step that fails is read again after a delay
(on object storage a missing or short read can pass), every process taking
part in every try (checkpoint_reads.py). A step that fails every try is
damaged, and the previous step is tried. Once one restores, the damaged
newer steps are moved to `<directory>/corrupted/<step>-<time>` (logged as
warnings that say how to move them back), so that the resumed run saves
those step numbers again; `save` also moves aside any existing step it is asked to write that
this Checkpointer neither restored nor saved, so a save is never skipped for
a step that cannot be restored. Network errors (UNAVAILABLE, a reset
connection, ...) that persist stop the restore with an error and move
nothing. A Checkpointer opened with read_only=True (evaluation, sampling)
changes nothing in the directory: no clean-up, no moves, no saves.

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
from etils import epath
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from routing_jax import multihost
from routing_jax.training import checkpoint_reads
from routing_jax.training import checksums

CORRUPTED_SUBDIR = "corrupted"


class CheckpointRestoreError(RuntimeError):
  """No checkpoint could be restored; the message says what to do."""


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
      read_only: bool = False,
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
      read_only: change nothing in the directory, for tools that read a
        running job's checkpoints: its in-progress save (a tmp directory)
        is left alone, a damaged step is skipped but not moved, and `save`
        raises.
    """
    self._keep = _positive_int("keep", keep)
    self._save_every = _positive_int("save_every", save_every)
    self._metadata = _json_dict("metadata", metadata)
    self._read_only = bool(read_only)
    checkpoint_reads.quiet_orbax_leftovers()
    # Steps this Checkpointer wrote or restored: a save of one of them is a
    # duplicate; any other existing step is replaced (see `save`).
    self._saved: set[int] = set()
    self._restored: tuple[int, dict[str, Any]] | None = None
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else self._keep,
        # Orbax's own default (1) draws a warning when read-only.
        save_interval_steps=0 if read_only else 1,
        enable_async_checkpointing=async_save,
        create=not read_only,
        # Removes `<step>.orbax-checkpoint-tmp` left by a process that died
        # mid-save; never in a read-only tool, where the tmp directory may
        # be a running job's save.
        cleanup_tmp_directories=not read_only,
        read_only=self._read_only,
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

    A step that exists but that this Checkpointer neither saved nor restored
    (the restore fell back past it: it could not be read) is moved to
    `corrupted/` and written again.

    Args:
      step: the training step (>= 0) the state belongs to.
      state: pytree of jax.Arrays (any sharding); only save finite states.
      data_state: JSON dict with the input pipeline position, or None.
      force: save regardless of save_every (final or preemption save).
      meta: extra JSON entries for this checkpoint's "meta" item.

    Returns:
      Whether a save was started.
    """
    if self._read_only:
      raise RuntimeError(f"{self.directory} was opened read-only.")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
      raise ValueError(f"step={step!r} must be an int.")
    if step < 0:
      raise ValueError(f"step={step} must be >= 0.")
    step = int(step)
    if not force and step % self._save_every:
      return False
    if step in self._saved or (self._restored and self._restored[0] == step):
      # E.g. a preemption right after a regular save of the same step.
      logging.info("Checkpoint for step %d already exists; not saving.", step)
      return False
    if step in self._manager.all_steps():
      self._set_aside(
          [step], "exists but was not restored, and this run saves it again"
      )
    data_state = _json_dict("data_state", data_state)
    meta = {
        **self._metadata,
        **_json_dict("meta", meta),
        "step": step,
        "time": time.time(),
        "checksums": checksums.state_checksums(state),
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
    self._saved.add(step)
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

  def restore(
      self,
      target: Any,
      step: int | None = None,
      before: int | None = None,
      partial: bool = False,
  ) -> tuple[Any, dict[str, Any], int] | None:
    """Restores a checkpoint onto the shardings of target.

    With step=None, tries the newest committed step first (older than
    `before`, if given); a step that fails every try (see checkpoint_reads.py)
    is logged as a warning and the previous one is tried. Once an older
    step restores, the newer ones that failed are moved to
    `<directory>/corrupted/` (unless read-only): the older step restoring
    shows that the target fits, so the failure is the step's own.

    Args:
      target: pytree of jax.ShapeDtypeStruct with shardings (or jax.Arrays),
        shaped like the saved state. Its shardings may be on a different mesh
        than the one that saved.
      step: restore exactly this step (no fallback), or None.
      before: with step=None, ignore steps >= before (a caller that found
        the newest restorable step unusable).
      partial: `target` is a state dataclass whose None fields (e.g. the
        optimizer state) are neither read nor checked; they stay None.

    Returns:
      (state, data_state, step), or None if the directory has no committed
      checkpoint at all (a fresh run). `read_meta(step)` then returns the
      meta item read with it.

    Raises:
      CheckpointRestoreError: checkpoints exist but none could be restored,
        or the storage failed every try (nothing is moved in either case:
        the target or the storage may be what is wrong).
    """
    self._manager.wait_until_finished()
    target = abstract_target(target)
    if step is not None:
      outcome, message, result = checkpoint_reads.read_agreed(
          self.directory, step, target, partial
      )
      if outcome != checkpoint_reads.OK:
        raise CheckpointRestoreError(
            f"Cannot restore step {step} from {self.directory}: {message}"
        )
      self._restored = (step, result[2])
      return result[0], result[1], step

    local = {
        s for s in self._manager.all_steps() if before is None or s < before
    }
    candidate = int(multihost.allgather(np.int64(max(local, default=-1))).max())
    if candidate < 0:
      return None
    failed = []  # (step, message)
    while candidate >= 0:
      outcome, message, result = checkpoint_reads.read_agreed(
          self.directory, candidate, target, partial
      )
      if outcome == checkpoint_reads.OK:
        break
      if outcome == checkpoint_reads.MISMATCH:
        raise CheckpointRestoreError(
            f"Checkpoint step {candidate} in {self.directory} holds another"
            f" model or optimizer than this config builds ({message}); nothing"
            " was moved. Rerun with the config the checkpoints were saved"
            " with (the workdir's config.json), or use a new workdir."
        )
      if outcome == checkpoint_reads.TRANSIENT:
        raise CheckpointRestoreError(
            f"Cannot read checkpoint step {candidate} in {self.directory} after"
            f" {len(checkpoint_reads.RETRY_DELAYS_S) + 1} tries ({message});"
            " nothing was moved. Rerun once the storage is reachable; if the"
            f" step itself is damaged, move {self.directory / str(candidate)}"
            f" into {self.directory / CORRUPTED_SUBDIR}/ and rerun."
        )
      logging.warning(
          "Checkpoint step %d in %s cannot be restored (%s); trying the"
          " previous one.",
          candidate,
          self.directory,
          message,
      )
      failed.append((candidate, message))
      older = max((s for s in local if s < candidate), default=-1)
      candidate = int(multihost.allgather(np.int64(older)).max())
    else:
      raise CheckpointRestoreError(
          f"None of the {len(failed)} checkpoints in {self.directory} could"
          " be restored ("
          + "; ".join(f"step {s}: {m}" for s, m in failed)
          + "). If the config differs from the one they were saved with"
          " (model size, routing, ...), rerun with that config; if they are"
          f" damaged, move them into {self.directory / CORRUPTED_SUBDIR}/"
          " to train from scratch here, or use a new workdir."
      )
    if failed:
      self._set_aside([s for s, _ in failed], "could not be restored")
    logging.info(
        "Restored checkpoint step %d from %s.", candidate, self.directory
    )
    self._restored = (candidate, result[2])
    return result[0], result[1], candidate

  def read_meta(self, step: int | None = None) -> dict[str, Any]:
    """The "meta" JSON dict of a step (default: the latest).

    For the step `restore` returned, the meta item read (and checked) with
    it.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointRestoreError(f"No checkpoints in {self.directory}.")
    if self._restored and self._restored[0] == step:
      return self._restored[1]
    restored = self._manager.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
    )
    return restored.meta

  def _set_aside(self, steps: list[int], why: str) -> None:
    """Moves step directories to corrupted/ (primary process only)."""
    if self._read_only:
      for s in steps:
        logging.warning(
            "Checkpoint step %d in %s %s; left in place (read-only).",
            s,
            self.directory,
            why,
        )
      return
    if jax.process_index() == 0:
      dest_dir = self.directory / CORRUPTED_SUBDIR
      dest_dir.mkdir(parents=True, exist_ok=True)
      for s in steps:
        dest = dest_dir / f"{s}-{int(time.time())}"
        n = 1
        while dest.exists():
          dest, n = dest_dir / f"{s}-{int(time.time())}-{n}", n + 1
        move_tree(self.directory / str(s), dest)
        logging.warning(
            "Checkpoint step %d %s: moved it to %s. Nothing is deleted; to"
            " use it again, move it back to %s.",
            s,
            why,
            dest,
            self.directory / str(s),
        )
    if jax.process_count() > 1:
      # A name of its own per set-aside (every process passes the same
      # agreed steps), never one name reused across the run.
      ocp.multihost.sync_global_processes(
          "routing_jax_set_aside_" + "_".join(map(str, steps))
      )
    self._manager.reload()


def move_tree(src: Any, dest: Any) -> None:
  """Moves a step directory: a rename where the store has one (a local
  filesystem), else copy everything, then delete the source.

  On object storage a "rename" is a copy and a delete per object; stopped
  half-way it can leave neither a whole step nor a whole copy. Copying all
  first keeps one complete version at every moment: the original until the
  copy is complete, the copy after.
  """
  src, dest = epath.Path(src), epath.Path(dest)
  if "://" not in str(src):
    src.rename(dest)
    return

  def copy_dir(source: epath.Path, target: epath.Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.iterdir()):
      if path.is_dir():
        copy_dir(path, target / path.name)
      else:
        path.copy(target / path.name, overwrite=True)

  copy_dir(src, dest)
  src.rmtree()


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
