# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Finding, verifying and opening the archives our TFDS builders read.

Our builders never download at training time. An archive is taken from the
TFDS manual directory (`DownloadConfig(manual_dir=...)`, by default
`<data_dir>/downloads/manual/`) when it is there, and is downloaded only when
the caller explicitly allows it (`allow_download=True`, used by the prepare
command). Downloads are verified by TFDS against `checksums.tsv` next to the
builders; manually placed archives are verified here against the same pinned
size and sha256, or against an explicit `ArchiveChecksum` (tests use this to
accept small generated archives).
"""

import contextlib
import dataclasses
import hashlib
import inspect
import os
import zipfile
from typing import IO, Iterator

from etils import epath
import numpy as np
import tensorflow_datasets as tfds


class LocalCodePath:
  """Mixin for our builders: `code_path` without `importlib_resources`.

  TFDS 4.9.10 resolves a builder's source path (used to find checksums.tsv
  when building) through the `importlib_resources` package, which it does
  not declare as a dependency; without it every build fails with
  ModuleNotFoundError. Our builders are plain modules, so the file path is
  enough.
  """

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(inspect.getfile(cls))


def stream_info(
    builder, description: str, key: str, dtype, homepage: str, **extra
):
  """DatasetInfo of a token stream stored as chunks: `key` holds a chunk's
  tokens, "offset" its start; records come back in stream order."""
  return tfds.core.DatasetInfo(
      builder=builder,
      description=description,
      features=tfds.features.FeaturesDict({
          key: tfds.features.Tensor(shape=(None,), dtype=dtype),
          "offset": tfds.features.Scalar(dtype=np.int64),
      }),
      homepage=homepage,
      disable_shuffling=True,
      **extra,
  )


class ArchiveBuilder(LocalCodePath):
  """Mixin for builders that read one pinned archive (ARCHIVE_URL, _FILENAME).

  Constructor args (beyond tfds.core.GeneratorBasedBuilder's data_dir, ...):
    archive_checksum: size and sha256 the archive must have (default: the
      real archive, pinned in checksums.tsv).
    allow_download: download the archive when it is not in the manual
      directory.
  """

  ARCHIVE_URL: str = ""
  ARCHIVE_FILENAME: str = ""

  def __init__(
      self,
      *,
      archive_checksum: "ArchiveChecksum | None" = None,
      allow_download: bool = False,
      **kwargs,
  ):
    self._archive_checksum = archive_checksum
    self._allow_download = allow_download
    super().__init__(**kwargs)

  def _locate_archive(self, dl_manager) -> epath.Path:
    """The verified archive: manual dir, or a download when allowed."""
    expected = self._archive_checksum or pinned_checksum(
        type(self), self.ARCHIVE_URL
    )
    return locate(
        dl_manager,
        filename=self.ARCHIVE_FILENAME,
        url=self.ARCHIVE_URL,
        expected=expected,
        allow_download=self._allow_download,
    )


class ArchiveError(ValueError):
  """An archive is missing, corrupt, or not the file that was pinned."""


@dataclasses.dataclass(frozen=True)
class ArchiveChecksum:
  """The expected size (bytes) and sha256 (hex) of an archive."""

  size: int
  sha256: str

  @classmethod
  def of_file(cls, path: os.PathLike | str) -> "ArchiveChecksum":
    """Computes the checksum of the file at `path`."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
      while chunk := f.read(1 << 20):
        h.update(chunk)
        size += len(chunk)
    return cls(size=size, sha256=h.hexdigest())


def pinned_checksum(builder_cls, url: str) -> ArchiveChecksum:
  """Returns the checksum pinned for `url` in the builder's checksums.tsv."""
  infos = builder_cls.url_infos or {}
  if url not in infos:
    raise ArchiveError(
        f"no checksum pinned for {url} in the checksums.tsv next to"
        f" {builder_cls.code_path}"
    )
  return ArchiveChecksum(size=int(infos[url].size), sha256=infos[url].checksum)


def verify(path: epath.Path, expected: ArchiveChecksum, url: str) -> None:
  """Raises ArchiveError if the file at `path` does not match `expected`."""
  got = ArchiveChecksum.of_file(path)
  if got != expected:
    raise ArchiveError(
        f"checksum mismatch for {path}: expected size {expected.size} and"
        f" sha256 {expected.sha256}, got size {got.size} and sha256"
        f" {got.sha256}. The file is truncated, corrupt or a different"
        f" version: delete it and download it again from {url}."
    )


def locate(
    dl_manager,
    *,
    filename: str,
    url: str,
    expected: ArchiveChecksum,
    allow_download: bool,
) -> epath.Path:
  """Returns the path of a verified archive.

  Args:
    dl_manager: the TFDS download manager passed to `_split_generators`.
    filename: the archive's file name in the manual directory.
    url: where the archive comes from (downloaded only if allowed).
    expected: the size and sha256 a manually placed archive must have.
    allow_download: whether to download `url` when no manual copy exists.

  Raises:
    ArchiveError: the archive is absent (and downloads are not allowed), or
      its checksum does not match.
  """
  try:
    manual_dir = epath.Path(dl_manager.manual_dir)
    problem = None
  except (AssertionError, ValueError) as e:  # TFDS: missing or empty dir.
    manual_dir, problem = None, str(e)
  if manual_dir is not None and (manual_dir / filename).exists():
    path = manual_dir / filename
    verify(path, expected, url)
    return path
  if allow_download:
    # TFDS verifies the download against checksums.tsv and raises
    # NonMatchingChecksumError on a mismatch.
    return epath.Path(dl_manager.download(url))
  where = (
      f"the manual directory {manual_dir}"
      if manual_dir is not None
      else f"the manual directory ({problem})"
  )
  raise ArchiveError(
      f"{filename} not found in {where}. Download {url} and put it there"
      " (or pass --manual_dir / DownloadConfig(manual_dir=...) naming the"
      " directory that holds it); downloads at build time are off unless"
      " allow_download=True."
  )


@contextlib.contextmanager
def open_zip_member(
    path: epath.Path, suffix: str, url: str
) -> Iterator[IO[bytes]]:
  """Opens the member of the zip at `path` whose name ends with `suffix`.

  Raises:
    ArchiveError: the zip is truncated/corrupt, or has no such member, or the
      member is empty.
  """
  try:
    with zipfile.ZipFile(os.fspath(path)) as zf:
      names = [
          n for n in zf.namelist() if n == suffix or n.endswith("/" + suffix)
      ]
      if not names:
        raise ArchiveError(
            f"{path} has no member named {suffix!r} (members:"
            f" {zf.namelist()[:10]}); is it the archive from {url}?"
        )
      if zf.getinfo(names[0]).file_size == 0:
        raise ArchiveError(f"member {names[0]!r} of {path} is empty")
      with zf.open(names[0]) as f:
        yield f
  except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as e:
    raise ArchiveError(
        f"{path} is not a readable zip archive ({e}): the file is truncated"
        f" or corrupt; delete it and download it again from {url}."
    ) from e
