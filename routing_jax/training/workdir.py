# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The run's workdir: a local directory or an object-storage URL (gs://...).

Everything a run writes there (checkpoints, metrics.jsonl, TensorBoard event
files, the loss-curve plot, config.json, profiles) goes through
`etils.epath`, which Orbax uses too, so a `gs://bucket/run` workdir behaves
like a local one (epath reads gs:// through gcsfs or TensorFlow). Local paths
are made absolute, as Orbax needs; a URL is never passed to `os.path`.
"""

import contextlib
import datetime
import json
import os
import socket
import sys
import time
from typing import Any, Iterator, Optional
import uuid

from absl import logging
from etils import epath

from routing_jax import errors
from routing_jax.nn import model_config

CONFIG_FILE = "config.json"
# Held by the training run that writes the workdir (see `lock`).
LOCK_FILE = "run.lock"
# Object storage has no atomic create: a lock object is read back this long
# after it is written.
_SETTLE_S = 1.0


def is_url(path: Any) -> bool:
  """Whether `path` names an object-storage location (scheme://...)."""
  return "://" in str(path)


def resolve(path: Any) -> epath.Path:
  """`path` as an epath.Path: URLs unchanged, local paths made absolute.

  Raises:
    errors.WorkdirError: a URL scheme that etils.epath does not know.
  """
  if is_url(path):
    try:
      return epath.Path(str(path))
    except KeyError as e:  # epath's whole report of an unknown scheme.
      scheme = str(path).split("://", 1)[0]
      raise errors.WorkdirError(
          f"{path}: unknown URL scheme {scheme}://; use a local path or a"
          " scheme etils.epath reads (gs://, s3://)"
      ) from e
  return epath.Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def check_reachable(path: Any) -> epath.Path:
  """Resolves `path` and touches its storage once, before any real work.

  A gs:// path needs the gcsfs package (epath imports it on first use); a
  missing one is reported here, in one line, instead of after compiling.

  Raises:
    errors.WorkdirError: the scheme is unknown or its package is missing.
  """
  resolved = resolve(path)
  try:
    resolved.exists()
  except ImportError as e:
    raise errors.WorkdirError(
        f"{path}: {e} (pip install gcsfs for gs://, s3fs for s3://)"
    ) from e
  return resolved


def create(
    workdir: Any, config: Any = None, *, primary: bool = True
) -> epath.Path:
  """Creates the workdir and (on the primary process) saves `config` there.

  The config is written as `config.json` on every start, so the file always
  holds the config of the latest (possibly resumed) run.

  Args:
    workdir: local path or URL.
    config: an ml_collections.ConfigDict, or None.
    primary: whether this process writes shared files (process 0).

  Returns:
    The resolved workdir.

  Raises:
    errors.WorkdirError: the directory cannot be created or written.
  """
  path = resolve(workdir)
  try:
    path.mkdir(parents=True, exist_ok=True)
    if primary and config is not None:
      (path / CONFIG_FILE).write_text(
          config.to_json_best_effort(indent=2, sort_keys=True) + "\n"
      )
  except OSError as e:
    raise errors.WorkdirError(
        f"cannot write to the workdir {path}: {type(e).__name__}: {e}"
    ) from e
  return path


def load_config(workdir: Any) -> Any:
  """The config a training run saved in its workdir (`config.json`).

  Lists come back as tuples, as the experiment configs write them.

  Raises:
    errors.WorkdirError: no readable config.json there.
  """
  import ml_collections  # pylint: disable=g-import-not-at-top

  path = resolve(workdir) / CONFIG_FILE
  try:
    saved = json.loads(path.read_text())
  except FileNotFoundError as e:
    raise errors.WorkdirError(
        f"no {CONFIG_FILE} in {workdir}: not a training run's workdir"
        " (or pass --config)"
    ) from e
  except (OSError, ValueError) as e:
    raise errors.WorkdirError(f"cannot read {path}: {e}") from e

  def tuples(x):
    if isinstance(x, dict):
      return {k: tuples(v) for k, v in x.items()}
    return tuple(tuples(v) for v in x) if isinstance(x, list) else x

  if isinstance(saved.get("model"), dict):  # written before model.routing
    saved["model"] = model_config.migrate_legacy(saved["model"])
  return ml_collections.ConfigDict(tuples(saved))


def check_model_config(
    workdir: Any, config: Any, ignore: tuple[str, ...] = ()
) -> None:
  """Refuses a model section that differs from the one the run trained with.

  Training writes `config.json`; evaluate and sample read the checkpoint
  with the config they are given, and a different model section (e.g.
  routing="topk" for a causal run) restores the same arrays and silently
  computes something else. A workdir without config.json is not checked.

  Args:
    workdir: the training run's workdir.
    config: the config given to the tool.
    ignore: model fields that may differ (they pick an implementation).

  Raises:
    errors.ConfigError: naming every differing field and both values.
  """
  path = resolve(workdir) / CONFIG_FILE
  if not path.exists():
    return
  try:
    saved = json.loads(path.read_text()).get("model", {})
  except (OSError, ValueError, AttributeError) as e:
    raise errors.WorkdirError(f"cannot read {path}: {e}") from e
  saved = model_config.dotted(model_config.migrate_legacy(saved))
  given = model_config.dotted(
      json.loads(config.model.to_json_best_effort(sort_keys=True))
  )
  # Fields added after the run was trained are not in its file.
  diff = [
      k
      for k in sorted(given)
      if k in saved and k not in ignore and saved[k] != given[k]
  ]
  if diff:
    raise errors.ConfigError(
        f"the model config differs from the one in {path}: "
        + ", ".join(
            f"model.{k}={given[k]!r} (trained with {saved[k]!r})" for k in diff
        )
        + "; drop those overrides or give the run's own config."
    )


class AppendFile:
  """A binary file opened for appending, locally or on object storage.

  Objects cannot be appended to: for a URL the content (what the object
  already holds, then every write) is kept in memory and the whole object is
  rewritten on `flush`. Locally this is a plain file in append mode.
  """

  def __init__(self, path: Any):
    self.path = epath.Path(path) if is_url(path) else resolve(path)
    self._file = None
    self._buffer = None
    if is_url(self.path):
      self._buffer = bytearray(
          self.path.read_bytes() if self.path.exists() else b""
      )
      self._dirty = False
    else:
      self._file = open(os.fspath(self.path), "ab")  # pylint: disable=consider-using-with

  def write(self, data: bytes) -> None:
    if self._file is not None:
      self._file.write(data)
    else:
      self._buffer.extend(data)
      self._dirty = True

  def flush(self) -> None:
    if self._file is not None:
      self._file.flush()
    elif self._dirty:
      self.path.write_bytes(bytes(self._buffer))
      self._dirty = False

  def close(self) -> None:
    self.flush()
    if self._file is not None:
      self._file.close()


def _boot_id() -> str:
  try:
    with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
      return f.read().strip()
  except OSError:
    return ""


def _start_ticks(pid: int) -> Optional[int]:
  """When process `pid` started (clock ticks since boot), if it runs."""
  try:
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
      # Field 22; the command name (field 2) may hold spaces: skip past it.
      return int(f.read().rsplit(")", 1)[1].split()[19])
  except (OSError, IndexError, ValueError):
    return None


def _identity() -> dict[str, Any]:
  pid = os.getpid()
  return {
      "host": socket.gethostname(),
      "pid": pid,
      "boot_id": _boot_id(),
      "start_ticks": _start_ticks(pid),
      "started": (
          datetime.datetime.now().astimezone().isoformat(timespec="seconds")
      ),
      "command": " ".join(sys.argv)[:500],
      "token": uuid.uuid4().hex,
  }


def owner_alive(owner: dict[str, Any]) -> Optional[bool]:
  """Whether the process that wrote a lock still runs (None: cannot tell).

  Only a lock written on this host can be judged: by its pid, and by the
  boot id and process start time, so that a pid reused after a reboot or a
  container restart does not keep a crashed run's lock alive.
  """
  if owner.get("host") != socket.gethostname():
    return None
  if owner.get("boot_id") and owner["boot_id"] != _boot_id():
    return False
  pid = owner.get("pid")
  if not isinstance(pid, int) or pid <= 0:
    return None
  ticks = _start_ticks(pid)
  if ticks is None:
    try:
      os.kill(pid, 0)
    except ProcessLookupError:
      return False
    except PermissionError:
      return True
    return True
  recorded = owner.get("start_ticks")
  return recorded is None or recorded == ticks


def _read_owner(path: epath.Path) -> Optional[dict[str, Any]]:
  try:
    owner = json.loads(path.read_text())
  except (OSError, ValueError):
    return None
  return owner if isinstance(owner, dict) else None


def _busy(path: epath.Path, owner: Optional[dict[str, Any]]) -> str:
  if owner is None:
    who = "another run (the lock file cannot be read)"
  else:
    who = (
        f"pid {owner.get('pid')} on host {owner.get('host')} since"
        f" {owner.get('started')}"
    )
  return (
      f"{path.parent} is in use by {who}. Wait for that run to end, or use"
      f" another --workdir; if it is gone, delete {path}."
  )


def _take(path: epath.Path) -> dict[str, Any]:
  """Takes the lock file `path`; raises WorkdirError when it is held.

  A lock left by a run that is gone from this host is replaced. For other
  hosts (and object storage, where the writer's process cannot be seen)
  the error names the file to delete. Objects have no atomic create:
  the lock is written, then read back after `_SETTLE_S`, and only the run
  whose token is there goes on (two runs start together only if one takes
  longer than that between its check and its write).
  """
  owner = _read_owner(path) if path.exists() else None
  if path.exists():
    alive = owner_alive(owner) if owner is not None else None
    if alive is not False:
      raise errors.WorkdirError(_busy(path, owner))
    logging.warning(
        "Removing the lock of a run that is gone (pid %s, started %s): %s",
        owner.get("pid"),
        owner.get("started"),
        path,
    )
    if not is_url(path):
      path.unlink(missing_ok=True)
  mine = _identity()
  if not is_url(path):
    try:  # Atomic locally: exactly one of two starters creates the file.
      fd = os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
      raise errors.WorkdirError(_busy(path, _read_owner(path))) from None
    with os.fdopen(fd, "w") as f:
      f.write(json.dumps(mine, indent=1) + "\n")
    return mine
  path.write_text(json.dumps(mine, indent=1) + "\n")
  time.sleep(_SETTLE_S)  # Lets a concurrent writer's object land first.
  now = _read_owner(path)
  if now is None or now.get("token") != mine["token"]:
    raise errors.WorkdirError(_busy(path, now))
  return mine


@contextlib.contextmanager
def lock(workdir: Any) -> Iterator[epath.Path]:
  """Holds `<workdir>/run.lock` for one training run (process 0 takes it).

  The file holds the holder's host, pid, boot id, start time and command,
  for the message a second run prints. With several processes, process 0
  takes the lock and the others learn the outcome, so every process stops
  when the workdir is in use. Read-only tools (evaluate, sample) take no
  lock.

  Raises:
    errors.WorkdirError: the workdir is in use, or cannot be written.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from routing_jax import multihost  # pylint: disable=g-import-not-at-top

  path = resolve(workdir) / LOCK_FILE
  mine, error = None, None
  if jax.process_index() == 0:
    try:
      path.parent.mkdir(parents=True, exist_ok=True)
      mine = _take(path)
    except OSError as e:
      error = errors.WorkdirError(
          f"cannot write to the workdir {path.parent}: {type(e).__name__}: {e}"
      )
    except errors.WorkdirError as e:
      error = e
  taken = multihost.allgather(int(error is None))
  if error is not None:
    raise error
  if not taken.all():
    raise errors.WorkdirError(
        f"process 0 could not lock {path} (its log says why)"
    )

  def release():
    if (
        mine is not None
        and (_read_owner(path) or {}).get("token") == mine["token"]
    ):
      path.unlink(missing_ok=True)

  # Also when another process's failure ends this one (no finally runs).
  forget = multihost.at_job_end(release)
  try:
    yield path
  finally:
    forget()
    release()
