# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Fashion-MNIST (and MNIST) from IDX files in a directory.

The IDX format (LeCun's MNIST format): a 4-byte big-endian magic number
0x0000TTDD (TT: element type, 0x08 = unsigned byte; DD: number of
dimensions), DD big-endian uint32 sizes, then the elements. Files may be
gzip-compressed (`.gz`), as Fashion-MNIST is distributed and as Debian's
`dataset-fashion-mnist` ships it.

  images, labels = load_split("/work/shared/data/fashion-mnist", "train")
  images.shape == (60000, 28, 28), labels.shape == (60000,)

No TFDS: the catalog's `fashion_mnist` builder would need a download; these
files are read directly (they are 30 MB in all).
"""

import gzip
import os

import numpy as np

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
UBYTE = 0x08


class IdxFormatError(ValueError):
  """An IDX file is malformed (bad magic, type, or size)."""


def read_idx(path: str | os.PathLike, *, ndim: int | None = None) -> np.ndarray:
  """Reads an unsigned-byte IDX file (optionally gzipped).

  Args:
    path: the file (`.gz` is decompressed).
    ndim: the number of dimensions the file must have (None: any).

  Returns:
    uint8 array with the file's dimensions.

  Raises:
    IdxFormatError: naming the file and what is wrong.
  """
  path = os.fspath(path)
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      data = f.read()
  except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError.
    raise IdxFormatError(f"cannot read IDX file {path}: {e}") from e
  if len(data) < 4 or data[0] != 0 or data[1] != 0:
    raise IdxFormatError(
        f"{path} is not an IDX file: its magic number must start with two"
        f" zero bytes, got {data[:4]!r}"
    )
  if data[2] != UBYTE:
    raise IdxFormatError(
        f"{path}: element type 0x{data[2]:02x} is not supported (only"
        " unsigned bytes, 0x08)"
    )
  dims = data[3]
  if ndim is not None and dims != ndim:
    raise IdxFormatError(f"{path}: expected {ndim} dimensions, got {dims}")
  header = 4 + 4 * dims
  if len(data) < header:
    raise IdxFormatError(f"{path}: truncated header ({len(data)} bytes)")
  shape = tuple(
      int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)
  )
  expected = int(np.prod(shape, dtype=np.int64))
  if len(data) - header != expected:
    raise IdxFormatError(
        f"{path}: header says shape {shape} ({expected} bytes of data), but"
        f" the file holds {len(data) - header} bytes after the header"
        " (truncated or corrupt)"
    )
  return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def _find(directory: str, stem: str) -> str:
  for name in (stem + ".gz", stem):
    path = os.path.join(directory, name)
    if os.path.exists(path):
      return path
  raise FileNotFoundError(
      f"{stem}.gz (or {stem}) not found in {directory}: put the"
      " Fashion-MNIST IDX files there (e.g. from Debian's"
      " dataset-fashion-mnist package or the Zalando release)"
  )


def load_split(directory: str | os.PathLike, split: str):
  """Loads one split of an MNIST-format dataset from `directory`.

  Args:
    directory: holds train-images-idx3-ubyte[.gz] etc.
    split: "train" or "test".

  Returns:
    (images uint8 [N, H, W], labels uint8 [N]).
  """
  directory = os.fspath(directory)
  if split not in FILES:
    raise ValueError(
        f"split must be one of {sorted(FILES)} for IDX datasets, got {split!r}"
    )
  if not directory or not os.path.isdir(directory):
    raise FileNotFoundError(
        f"IDX data directory {directory!r} does not exist (set"
        " data.manual_dir to the directory holding the IDX files)"
    )
  image_stem, label_stem = FILES[split]
  images = read_idx(_find(directory, image_stem), ndim=3)
  labels = read_idx(_find(directory, label_stem), ndim=1)
  if images.shape[0] != labels.shape[0]:
    raise IdxFormatError(
        f"{directory}: {images.shape[0]} {split} images but"
        f" {labels.shape[0]} labels"
    )
  return images, labels
