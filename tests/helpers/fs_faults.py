# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Full-disk faults for tests: a small real tmpfs, or ENOSPC injected.

`small_tmpfs(path, size)` mounts a tmpfs of `size` bytes (root only; the
test is skipped elsewhere): every writer in the process and its children
meets a genuinely full disk. `enospc_after(monkeypatch, budget, part)`
makes `workdir.AppendFile` writes to paths containing `part` fail with
ENOSPC once `budget` bytes have been written, for the tests that must run
everywhere.
"""

import contextlib
import errno
import os
import subprocess

import pytest

from routing_jax.training import workdir as workdir_lib


@contextlib.contextmanager
def small_tmpfs(path, size: int):
  """Mounts a tmpfs of `size` bytes at `path` (skips the test if it can't)."""
  os.makedirs(path, exist_ok=True)
  # huge=never: where the kernel backs tmpfs with 2 MiB pages by default,
  # three small files would fill the disk and the test would measure that.
  for options in (f"size={size},huge=never", f"size={size}"):
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", os.fspath(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if not mount.returncode:
      break
  if mount.returncode:
    pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
  try:
    yield path
  finally:
    subprocess.run(["umount", "-l", os.fspath(path)], check=False)


def fill(path, leave: int) -> None:
  """Fills the filesystem of `path` until about `leave` bytes are free."""
  stat = os.statvfs(path)
  free = stat.f_bavail * stat.f_frsize
  with open(os.path.join(path, "filler"), "wb") as f:
    f.write(b"\0" * max(free - leave, 0))


def enospc_after(monkeypatch, budget: int, part: str = "") -> None:
  """AppendFile writes to paths containing `part` fail after `budget` bytes."""
  written = {"n": 0}
  original = workdir_lib.AppendFile.write

  def write(self, data):
    if part in str(self.path):
      written["n"] += len(data)
      if written["n"] > budget:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
    original(self, data)

  monkeypatch.setattr(workdir_lib.AppendFile, "write", write)
