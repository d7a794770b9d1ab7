# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""A fake object-storage scheme for etils.epath, backed by a local directory.

`fakegs://bucket/run` is handled like `gs://bucket/run`: `str()` and
`os.fspath()` give the URL, so code that hands the path to plain `open`,
`os.makedirs` or `os.path.abspath` misses the bucket (it writes under the
current directory, or fails), while code that goes through epath reaches the
backing directory. `as_posix()` returns the backing path: Orbax gives that
string to tensorstore, and here the file driver stands in for the driver
tensorstore has for a real bucket (gcs for gs://).

  fake_bucket.install(tmp_path / "root")
  epath.Path("fakegs://b/x").write_text("hi")  # -> tmp_path/root/b/x
"""

import os

from etils import epath
from etils.epath import backend as backend_lib
from etils.epath import gpath
from etils.epath import register

SCHEME = "fakegs"
PREFIX = SCHEME + "://"
_root = None


def local(path) -> str:
  """The backing local path of a fakegs:// URL (other strings unchanged)."""
  path = os.fspath(path) if isinstance(path, os.PathLike) else path
  if isinstance(path, str) and path.startswith(PREFIX):
    return os.path.join(_root, path[len(PREFIX) :])
  return path


def _url(path: str) -> str:
  rel = os.path.relpath(path, _root)
  return PREFIX + ("" if rel == "." else rel)


class _Backend:
  """The local os backend, reached through fakegs:// URLs."""

  def __getattr__(self, name):
    method = getattr(backend_lib.os_backend, name)

    def call(*args, **kwargs):
      out = method(*(local(a) for a in args), **kwargs)
      if name == "glob":
        return [_url(p) for p in out]
      if name == "walk":
        return ((_url(r), d, f) for r, d, f in out)
      return out

    return call


_BACKEND = _Backend()


class FakeBucketPath(gpath.PosixGPath):
  """A PosixGPath whose scheme is fakegs:// (see the module docstring)."""

  def __new__(cls, *parts):
    full = "/".join(os.fspath(p) for p in parts)
    if full.startswith(PREFIX):  # As GPath maps gs:// to /gs/.
      full = f"/{SCHEME}/" + full[len(PREFIX) :]
    return super().__new__(cls, full)

  @property
  def _uri_scheme(self):
    if self.parts[:2] == ("/", SCHEME):
      return SCHEME
    return super()._uri_scheme

  @property
  def _backend(self):
    return _BACKEND if self._uri_scheme == SCHEME else super()._backend

  def as_posix(self) -> str:
    return local(self._path_str)


def install(root) -> None:
  """Registers fakegs:// with epath, backed by the directory `root`."""
  global _root
  _root = os.fspath(root)
  os.makedirs(_root, exist_ok=True)
  register.register_path_cls(PREFIX)(FakeBucketPath)
