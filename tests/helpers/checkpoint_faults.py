# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Faults injected into committed checkpoint steps, for the restore tests.

Each function damages one step directory (`<checkpoints>/<step>`) the way
storage can: a deleted or corrupted metadata file, truncated or bit-flipped
array data, a corrupted meta item. `failing_reads` makes reads of a step
fail for a while, as object storage can (a missing object, a reset
connection), without touching the files.

OCDBT keeps array data in `d/` folders: `state/d` holds the merged tree
that restore reads, and `state/ocdbt.process_<i>/d` the chunks each process
wrote (small chunks are inline in the b-tree nodes).
"""

import contextlib
import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp

from routing_jax.training import checkpoint_reads


def array_files(step_dir, process=None) -> list[pathlib.Path]:
  """The array data files of a step (only one process's if given)."""
  state = pathlib.Path(step_dir) / "state"
  root = state if process is None else state / f"ocdbt.process_{process}"
  files = sorted(
      p for p in root.rglob("*") if p.is_file() and p.parent.name == "d"
  )
  assert files, f"no array files under {root}"
  return files


def truncate_arrays(step_dir, process=None) -> None:
  """Cuts every array data file to half its size."""
  for f in array_files(step_dir, process):
    with open(f, "r+b") as fh:
      fh.truncate(f.stat().st_size // 2)


def flip_bytes(step_dir, merged_tree=False, seed=0, only=None) -> None:
  """Damages array data so that it reads back, with wrong values or not.

  By default one byte of the files the processes wrote (ocdbt.process_<i>/d)
  such that the step still reads back but one array's value changes (Orbax
  checks nothing there; on the tiny config 1 flip moved the validation loss
  by 0.1%, 20 made it NaN). Those files also hold per-process b-tree nodes
  that restore never reads and compressed blocks whose damage is a read
  error, so a byte flipped blindly may change nothing (which made a test
  flaky): candidates are tried, from a fixed seed, until one reads back
  changed (with `only`, e.g. "params": changed an array under that
  top-level key). merged_tree=True flips bytes in the middle of every data file,
  state/d included, whose b-tree nodes hold the small arrays inline under
  a CRC-32C that tensorstore checks: a read error.
  """
  if merged_tree:
    for f in array_files(step_dir):
      data = bytearray(f.read_bytes())
      for i in range(len(data) // 4, 3 * len(data) // 4, 97):
        data[i] ^= 0xFF
      f.write_bytes(bytes(data))
    return
  state = pathlib.Path(step_dir) / "state"
  before = _read_leaves(state)
  files = [
      f
      for f in array_files(step_dir)
      if f.parent.parent.name.startswith("ocdbt.process_")
  ]
  # A byte drawn uniformly over all the data (not a file first: the many
  # small files are b-tree nodes that restore never reads; their names,
  # and so a file-first draw, change from run to run).
  ends = np.cumsum([f.stat().st_size for f in files])
  rng = np.random.default_rng(seed)
  for _ in range(200):
    at = int(rng.integers(ends[-1]))
    i = int(np.searchsorted(ends, at, side="right"))
    f = files[i]
    original = f.read_bytes()
    data = bytearray(original)
    data[at - (int(ends[i - 1]) if i else 0)] ^= 0xFF
    f.write_bytes(bytes(data))
    try:
      after = _read_leaves(state)
    except Exception:  # pylint: disable=broad-except
      after = None  # a read error: not the damage wanted here
    if after is not None and any(
        before[k].tobytes() != after[k].tobytes()
        for k in before
        if only is None or k.startswith(f"['{only}']")
    ):
      return
    f.write_bytes(original)
  raise AssertionError(f"no byte of {state} changed a value silently")


def _read_leaves(state_dir) -> dict[str, np.ndarray]:
  tree = ocp.PyTreeCheckpointer().restore(state_dir)
  return {
      jax.tree_util.keystr(path): np.asarray(x)
      for path, x in jax.tree_util.tree_leaves_with_path(tree)
  }


def delete_state_metadata(step_dir) -> None:
  """Removes state/_METADATA (Orbax then fails with a pytree error)."""
  (pathlib.Path(step_dir) / "state" / "_METADATA").unlink()


def corrupt_state_metadata(step_dir) -> None:
  """Cuts state/_METADATA mid-JSON."""
  (pathlib.Path(step_dir) / "state" / "_METADATA").write_text('{"tree_meta')


def corrupt_meta_item(step_dir) -> None:
  """Cuts the meta item's JSON (config hash, checksums) mid-way."""
  (pathlib.Path(step_dir) / "meta" / "metadata").write_text('{"model_ha')


def delete_item(step_dir, item="data") -> None:
  """Removes a whole item directory (data, meta or state)."""
  folder = pathlib.Path(step_dir) / item
  for p in sorted(folder.rglob("*"), reverse=True):
    p.unlink() if p.is_file() else p.rmdir()
  folder.rmdir()


@contextlib.contextmanager
def failing_reads(step, times, error=None):
  """Makes the next `times` reads of `step` raise `error`, then read again.

  Yields the list of steps read (failed reads included), to count tries.
  """
  error = error or ConnectionResetError("injected: connection reset by peer")
  real = checkpoint_reads.read_step
  reads = []

  def read_step(directory, s, target, partial=False):
    reads.append(s)
    if s == step and reads.count(step) <= times:
      raise error
    return real(directory, s, target, partial)

  checkpoint_reads.read_step = read_step
  try:
    yield reads
  finally:
    checkpoint_reads.read_step = real
