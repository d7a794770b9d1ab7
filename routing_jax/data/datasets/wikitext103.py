# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""WikiText-103 (word level) as a TFDS builder.

Reads `wiki.{train,valid,test}.tokens` from wikitext-103-v1.zip (Merity et
al. 2016; CC BY-SA). As in Transformer-XL and the paper's setting, each line
is split on whitespace and ends with an `<eos>` token; the vocabulary is every
word of the train split (plus `<eos>`): 267,735 types on the real data, with
`<unk>` among them. Id 0 is reserved for padding / the start token, so word
ids start at 1 and the model's vocabulary is len(vocab) = 267,736.

Each split is one token stream (the standard word-level evaluation reads the
test set as a continuous text) stored as consecutive records of
`CHUNK_TOKENS` int32 ids with their offsets. The vocabulary is saved in the
dataset's metadata (`builder.info.metadata["vocab"]`, a list indexed by id,
`"<pad>"` at 0) so the pipeline can decode ids.

Build (offline, archive already downloaded):
  python -m routing_jax.data.datasets.build --name=wikitext103 \
      --data_dir=~/tensorflow_datasets --manual_dir=/dir/with/the/zip
"""

import collections
import io

import numpy as np
import tensorflow_datasets as tfds

from routing_jax.data.datasets import archives

URL = "https://wikitext.smerity.com/wikitext-103-v1.zip"
# The original location (Salesforce S3), no longer served:
# https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-103-v1.zip
FILENAME = "wikitext-103-v1.zip"
MEMBERS = {
    "train": "wiki.train.tokens",
    "validation": "wiki.valid.tokens",
    "test": "wiki.test.tokens",
}
PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
CHUNK_TOKENS = 1 << 16


def line_tokens(line: str) -> list[str]:
  """The tokens of one line of a .tokens file: its words, then `<eos>`."""
  return line.split() + [EOS]


def build_vocab(lines) -> list[str]:
  """Returns [PAD] + words by decreasing count (ties: alphabetical).

  `<unk>` is appended if the text never uses it, so unknown words of the
  other splits have an id.
  """
  counts = collections.Counter()
  for line in lines:
    counts.update(line_tokens(line))
  words = sorted(counts, key=lambda w: (-counts[w], w))
  if UNK not in counts:
    words.append(UNK)
  return [PAD] + words


class Wikitext103(archives.ArchiveBuilder, tfds.core.GeneratorBasedBuilder):
  """WikiText-103, word level, stored as chunks of int32 word ids."""

  VERSION = tfds.core.Version("1.0.0")
  ARCHIVE_URL = URL
  ARCHIVE_FILENAME = FILENAME
  RELEASE_NOTES = {"1.0.0": "Train-split vocabulary, <eos> per line."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Download {URL} and place {FILENAME} in the manual directory."
  )

  def _info(self) -> tfds.core.DatasetInfo:
    return archives.stream_info(
        self,
        "WikiText-103: 28,475 Good and Featured Wikipedia articles,"
        " word level, <eos> per line.",
        "ids",
        np.int32,
        "https://wikitext.smerity.com/",
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    path = self._locate_archive(dl_manager)
    with archives.open_zip_member(path, MEMBERS["train"], URL) as f:
      vocab = build_vocab(io.TextIOWrapper(f, encoding="utf-8"))
    self.info.metadata["vocab"] = vocab
    word_ids = {w: i for i, w in enumerate(vocab)}
    return {
        split: self._generate_examples(path, member, word_ids)
        for split, member in MEMBERS.items()
    }

  def _generate_examples(self, path, member, word_ids):
    unk = word_ids[UNK]
    buf: list[int] = []
    offset = 0
    with archives.open_zip_member(path, member, URL) as f:
      for line in io.TextIOWrapper(f, encoding="utf-8"):
        buf.extend(word_ids.get(w, unk) for w in line_tokens(line))
        while len(buf) >= CHUNK_TOKENS:
          yield offset // CHUNK_TOKENS, {
              "ids": np.asarray(buf[:CHUNK_TOKENS], np.int32),
              "offset": offset,
          }
          del buf[:CHUNK_TOKENS]
          offset += CHUNK_TOKENS
    if buf:
      yield offset // CHUNK_TOKENS, {
          "ids": np.asarray(buf, np.int32),
          "offset": offset,
      }
