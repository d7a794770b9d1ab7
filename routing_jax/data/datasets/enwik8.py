# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""enwik8 as a TFDS builder: the first 10^8 bytes of English Wikipedia.

The Hutter-prize file `enwik8` (inside http://mattmahoney.net/dc/enwik8.zip)
split as in the literature: the first 90M bytes train, the next 5M
validation, the last 5M test. The byte stream of a split is stored as
consecutive records of `CHUNK_BYTES` bytes (the last one shorter) with their
offsets, so readers get random access into the stream (the input pipeline
cuts its own sequences) and each split is one document.

Build (offline, archive already downloaded):
  python -m routing_jax.data.datasets.build --name=enwik8 \
      --data_dir=~/tensorflow_datasets --manual_dir=/path/with/enwik8.zip

Archives of any other length are split in the same 90/5/5 proportions; the
pinned checksum (checksums.tsv) guarantees the real file unless a test passes
its own `archive_checksum`.
"""

import numpy as np
import tensorflow_datasets as tfds

from routing_jax.data.datasets import archives

URL = "http://mattmahoney.net/dc/enwik8.zip"
FILENAME = "enwik8.zip"
MEMBER = "enwik8"
CHUNK_BYTES = 1 << 16


def split_bounds(total: int) -> dict[str, tuple[int, int]]:
  """Byte ranges [start, stop) of each split: 90% / 5% / 5%.

  For the real file (10^8 bytes) this is the standard 90M / 5M / 5M.
  """
  train_end = total * 9 // 10
  valid_end = total * 19 // 20
  return {
      "train": (0, train_end),
      "validation": (train_end, valid_end),
      "test": (valid_end, total),
  }


class Enwik8(archives.ArchiveBuilder, tfds.core.GeneratorBasedBuilder):
  """enwik8, byte level, stored as fixed-size chunks of the byte stream."""

  VERSION = tfds.core.Version("1.0.0")
  ARCHIVE_URL = URL
  ARCHIVE_FILENAME = FILENAME
  RELEASE_NOTES = {"1.0.0": "90M/5M/5M byte split, 64 KiB chunks."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Download {URL} and place {FILENAME} in the manual directory."
  )

  def _info(self) -> tfds.core.DatasetInfo:
    return archives.stream_info(
        self,
        "The first 10^8 bytes of the English Wikipedia XML dump of"
        " 2006-03-03 (Hutter prize), byte level.",
        "bytes",
        np.uint8,
        "http://mattmahoney.net/dc/textdata.html",
    )

  def _split_generators(self, dl_manager):
    path = self._locate_archive(dl_manager)
    with archives.open_zip_member(path, MEMBER, URL) as f:
      data = f.read()
    if self._archive_checksum is None and len(data) != 100_000_000:
      raise archives.ArchiveError(
          f"{path}: member {MEMBER!r} has {len(data)} bytes, expected"
          " 100,000,000"
      )
    bounds = split_bounds(len(data))
    return {
        split: self._generate_examples(data[start:stop])
        for split, (start, stop) in bounds.items()
    }

  def _generate_examples(self, data: bytes):
    if not data:
      raise archives.ArchiveError(
          "a split of the enwik8 archive is empty: the archive is too small"
      )
    arr = np.frombuffer(data, dtype=np.uint8)
    for i, start in enumerate(range(0, len(arr), CHUNK_BYTES)):
      yield i, {"bytes": arr[start : start + CHUNK_BYTES], "offset": start}
