# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Local text files as a TFDS builder: one record of raw bytes per file.

The files matching a glob are split by whole file, deterministically and
independently of directory order: files are ordered by the CRC-32 of their
base name (ties by name); the first max(1, round(5%)) go to validation, the
next as many to test, the rest to train. At least 3 files are needed.

Each file is one document (the input pipeline never lets a sequence span two
files). The dataset is stored under a config named after a fingerprint of
the matched paths, sizes and modification times, so editing the files or the
glob builds a new dataset instead of reusing a stale one.

  builder = TextFiles(pattern="/data/books/*.txt", data_dir=...,
                      file_format="array_record")
  builder.download_and_prepare()
  builder.as_data_source("train")[0]   # {"bytes": uint8 [n], "path": ...}
"""

import dataclasses
import glob
import hashlib
import os
import zlib

import numpy as np
import tensorflow_datasets as tfds

from routing_jax.data.datasets import archives

HELD_OUT_FRACTION = 0.05


def match_files(pattern: str) -> list[str]:
  """Returns the sorted absolute paths of the files matching `pattern`.

  Raises:
    FileNotFoundError: nothing matches.
  """
  if not pattern:
    raise ValueError("data.text_files must be a glob of text files, got ''")
  paths = glob.glob(os.path.expanduser(pattern), recursive=True)
  paths = sorted(os.path.abspath(p) for p in paths if os.path.isfile(p))
  if not paths:
    raise FileNotFoundError(
        f"data.text_files pattern {pattern!r} matched no files"
    )
  return paths


def assign_splits(paths: list[str]) -> dict[str, list[str]]:
  """Splits files into train / validation / test by hashed base name.

  Returns:
    {split: sorted paths}; every split non-empty.

  Raises:
    ValueError: fewer than 3 files.
  """
  if len(paths) < 3:
    raise ValueError(
        "data.text_files must match at least 3 files (whole files are held"
        f" out for validation and test), got {len(paths)}: {paths}"
    )

  def key(p):
    name = os.path.basename(p)
    return (zlib.crc32(name.encode("utf-8")), name, p)

  ordered = sorted(paths, key=key)
  n_held = max(1, round(HELD_OUT_FRACTION * len(paths)))
  return {
      "validation": sorted(ordered[:n_held]),
      "test": sorted(ordered[n_held : 2 * n_held]),
      "train": sorted(ordered[2 * n_held :]),
  }


def fingerprint(paths: list[str]) -> str:
  """A short stable name for this exact set of files (paths, sizes, mtimes)."""
  h = hashlib.sha256()
  for p in paths:
    st = os.stat(p)
    h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8"))
  return "files_" + h.hexdigest()[:16]


@dataclasses.dataclass(eq=False)
class TextFilesConfig(tfds.core.BuilderConfig):
  """Which files to read: a glob."""

  pattern: str = ""


class TextFiles(archives.LocalCodePath, tfds.core.GeneratorBasedBuilder):
  """Raw bytes of local text files, one record per file."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "One record per file, split by hashed name."}

  def __init__(self, *, pattern: str | None = None, **kwargs):
    """Creates the builder.

    Args:
      pattern: glob of the text files (required unless `config` is given).
      **kwargs: passed to tfds.core.GeneratorBasedBuilder (data_dir, ...).
    """
    if pattern is not None and "config" not in kwargs:
      paths = match_files(pattern)
      kwargs["config"] = TextFilesConfig(
          name=fingerprint(paths),
          version=self.VERSION,
          description=f"text files matching {pattern!r}",
          pattern=pattern,
      )
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Local text files, raw bytes, one record per file.",
        features=tfds.features.FeaturesDict({
            "bytes": tfds.features.Tensor(shape=(None,), dtype=np.uint8),
            "path": tfds.features.Text(),
        }),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Local files only.
    if self.builder_config is None or not self.builder_config.pattern:
      raise ValueError("TextFiles needs pattern=... (a glob of text files)")
    splits = assign_splits(match_files(self.builder_config.pattern))
    return {s: self._generate_examples(p) for s, p in splits.items()}

  def _generate_examples(self, paths):
    for i, path in enumerate(paths):
      with open(path, "rb") as f:
        data = f.read()
      if not data:
        raise ValueError(f"text file {path} is empty; remove it or fill it")
      yield i, {"bytes": np.frombuffer(data, np.uint8), "path": path}
