# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Datasets the TFDS catalog lacks, and how to prepare every dataset we use.

Importing this package registers our TFDS builders (`enwik8`,
`wikitext103`, `text_files`), after which `tfds.data_source("enwik8",
data_dir=..., download=False)` reads a prepared copy. Everything is written
as `array_record` and read by random access (no TensorFlow needed).

Preparing is an explicit, separate step (the training job never downloads):

  python -m routing_jax.data.datasets.build --name=enwik8 \
      --data_dir=~/tensorflow_datasets --manual_dir=~/downloads

or from Python, `routing_jax.data.datasets.prepare("enwik8", data_dir=...,
manual_dir=...)`.
"""

import tensorflow_datasets as tfds

from routing_jax.data.datasets.archives import ArchiveChecksum
from routing_jax.data.datasets.archives import ArchiveError
from routing_jax.data.datasets.enwik8 import Enwik8
from routing_jax.data.datasets.text_files import TextFiles
from routing_jax.data.datasets.wikitext103 import Wikitext103

OUR_BUILDERS = {"enwik8": Enwik8, "wikitext103": Wikitext103}
CATALOG = ("cifar10", "imagenet_resized/64x64", "pg19")


def prepare(
    name: str,
    *,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    allow_download: bool = False,
    archive_checksum: ArchiveChecksum | None = None,
    pattern: str | None = None,
):
  """Builds dataset `name` as array_record under `data_dir`; returns builder.

  Args:
    name: "enwik8", "wikitext103", "text_files", or a TFDS catalog name
      (e.g. "cifar10", "imagenet_resized/64x64", "pg19").
    data_dir: TFDS data dir (None: TFDS's default).
    manual_dir: where downloaded archives were put (None: TFDS's default,
      <data_dir>/downloads/manual).
    allow_download: let our builders download their archive if it is not in
      `manual_dir` (catalog builders always download what they need).
    archive_checksum: expected size/sha256 of our builders' archive (None:
      the pinned one).
    pattern: the glob of text files, for name="text_files".

  Returns:
    The prepared tfds builder.
  """
  config = tfds.download.DownloadConfig(
      manual_dir=manual_dir, try_download_gcs=False
  )
  kwargs = dict(data_dir=data_dir or None, file_format="array_record")
  if name in OUR_BUILDERS:
    builder = OUR_BUILDERS[name](
        archive_checksum=archive_checksum,
        allow_download=allow_download,
        **kwargs,
    )
  elif name == "text_files":
    builder = TextFiles(pattern=pattern, **kwargs)
  else:
    builder = tfds.builder(name, **kwargs)
  builder.download_and_prepare(download_config=config)
  return builder


__all__ = [
    "ArchiveChecksum",
    "ArchiveError",
    "CATALOG",
    "Enwik8",
    "TextFiles",
    "Wikitext103",
    "prepare",
]
