# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The run's workdir: a local directory or an object-storage URL (gs://...).

Everything a run writes there (checkpoints, metrics.jsonl, TensorBoard event
files, the loss-curve plot, config.json, profiles) goes through
`etils.epath`, which Orbax uses too, so a `gs://bucket/run` workdir behaves
like a local one (epath reads gs:// through gcsfs or TensorFlow). Local paths
are made absolute, as Orbax needs; a URL is never passed to `os.path`.
"""

import os
from typing import Any

from etils import epath

from routing_jax import errors

CONFIG_FILE = "config.json"


def is_url(path: Any) -> bool:
  """Whether `path` names an object-storage location (scheme://...)."""
  return "://" in str(path)


def resolve(path: Any) -> epath.Path:
  """`path` as an epath.Path: URLs unchanged, local paths made absolute."""
  if is_url(path):
    return epath.Path(str(path))
  return epath.Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


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
