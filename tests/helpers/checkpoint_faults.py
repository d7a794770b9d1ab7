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

import numpy as np

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


def flip_bytes(step_dir, count=1, seed=0, merged_tree=False) -> None:
  """Inverts `count` bytes in the middle of each array data file.

  By default only the files the processes wrote (ocdbt.process_<i>/d),
  where large chunks live: a flipped byte there reads back silently (Orbax
  checks nothing), only the values change. On the tiny config, 1 flip in
  the largest file moved the validation loss by 0.1%, 20 made it NaN;
  hundreds also hit the compression's block headers, which tensorstore
  reports as a read error. merged_tree=True also flips bytes of state/d,
  whose b-tree nodes hold the small arrays inline under a CRC-32C that
  tensorstore checks: a read error.
  """
  files = [
      f
      for f in array_files(step_dir)
      if merged_tree or f.parent.parent.name.startswith("ocdbt.process_")
  ]
  assert files
  rng = np.random.default_rng(seed)
  for f in files:
    data = bytearray(f.read_bytes())
    lo, hi = len(data) // 4, 3 * len(data) // 4
    for i in rng.choice(
        np.arange(lo, hi), size=min(count, hi - lo), replace=False
    ):
      data[i] ^= 0xFF
    f.write_bytes(bytes(data))


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

  def read_step(directory, s, target):
    reads.append(s)
    if s == step and reads.count(step) <= times:
      raise error
    return real(directory, s, target)

  checkpoint_reads.read_step = read_step
  try:
    yield reads
  finally:
    checkpoint_reads.read_step = real
