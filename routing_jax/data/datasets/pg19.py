# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""PG-19 with a sentencepiece subword vocabulary, and word-level units.

The paper models PG-19 with a subword vocabulary (T2T SubwordTextEncoder,
~2^15 target) and reports word-level perplexity. We train a sentencepiece BPE
model on a sample of the train split instead, once, and save it next to the
TFDS data (`<data_dir>/pg19_spm<V>.model`); every later run (and every host)
loads that file, so ids never change under a checkpoint.

Preparation (`prepare_split`, run by `python -m routing_jax.data.datasets.build
--name=pg19`, or else by process 0 of the first training job) trains the
tokenizer and tokenizes every book of a split once, saving each book's
length in tokens and the split's token and word counts; training hosts only
load these files (`load_split`). The data dir may be a URL (gs://...).

Ids and tokenizer settings: `subwords.py`.

Word-level perplexity: with L nats per subword token, the word-level
perplexity is exp(L * T / W), T subword tokens and W words (whitespace
separated) in the evaluation text; `tokens_per_word` computes T / W. The
reference's PG-19 problem file fixes this factor at 1.248 for its own
vocabulary (`PAPER_TOKENS_PER_WORD`); ours differs and must be measured on
the split being reported.
"""

import io
import json
import os

from etils import epath
import numpy as np
import sentencepiece as spm

from routing_jax.data.datasets import subwords

PAPER_TOKENS_PER_WORD = 1.248
PAD_ID, UNK_ID = subwords.PAD_ID, subwords.UNK_ID


def default_data_dir(data_dir: str | None) -> str:
  """The TFDS data dir: `data_dir`, else $TFDS_DATA_DIR, else the default."""
  data_dir = data_dir or os.environ.get(
      "TFDS_DATA_DIR", "~/tensorflow_datasets"
  )
  return data_dir if "://" in data_dir else os.path.expanduser(data_dir)


def tokenizer_path(data_dir: str | None, vocab_size: int) -> str:
  """Where the tokenizer for `vocab_size` lives."""
  return os.path.join(default_data_dir(data_dir), f"pg19_spm{vocab_size}.model")


def book_text(example) -> str:
  """The text of a PG-19 example (TFDS returns str or bytes)."""
  text = example["book_text"]
  if isinstance(text, bytes):
    text = text.decode("utf-8")
  return str(text)


def sample_lines(source, *, max_books: int, max_bytes: int):
  """Yields non-empty lines from up to `max_books` books spread evenly over
  `source`, stopping after about `max_bytes` bytes."""
  n = len(source)
  if n == 0:
    raise ValueError("cannot train a tokenizer: the PG-19 split is empty")
  picks = np.unique(np.linspace(0, n - 1, min(n, max_books)).astype(int))
  seen = 0
  for i in picks:
    for line in book_text(source[int(i)]).split("\n"):
      if line.strip():
        seen += len(line)
        yield line
      if seen >= max_bytes:
        return


def train_tokenizer(
    source,
    vocab_size: int,
    path: str,
    *,
    max_books: int = 500,
    max_bytes: int = 200 << 20,
) -> spm.SentencePieceProcessor:
  """Trains a BPE sentencepiece model on a sample of `source`; saves it.

  Args:
    source: the PG-19 train split (random access, `book_text` feature).
    vocab_size: number of pieces (ids 0..vocab_size-1), at least ~400 (the
      256 byte pieces plus the characters must fit).
    path: the .model file to write (atomically).
    max_books: books sampled, spread evenly over the split.
    max_bytes: stop reading text after this many bytes.

  Returns:
    The trained processor.
  """
  return subwords.train(
      sample_lines(source, max_books=max_books, max_bytes=max_bytes),
      vocab_size,
      path,
      "PG-19",
  )


def _load_tokenizer(path: str, vocab_size: int) -> spm.SentencePieceProcessor:
  return subwords.load(path, vocab_size, "data.tokenizer_vocab_size")


def load_or_train_tokenizer(
    data_dir: str | None, vocab_size: int, train_source_fn, **train_kwargs
) -> spm.SentencePieceProcessor:
  """Loads `tokenizer_path(data_dir, vocab_size)`, training it if absent.

  Args:
    data_dir: TFDS data dir ("" or None: the default).
    vocab_size: the tokenizer's vocabulary size (data.tokenizer_vocab_size).
    train_source_fn: () -> the train split, called only when training.
    **train_kwargs: passed to `train_tokenizer`.
  """
  path = tokenizer_path(data_dir, vocab_size)
  if epath.Path(path).exists():
    return _load_tokenizer(path, vocab_size)
  return train_tokenizer(train_source_fn(), vocab_size, path, **train_kwargs)


encode = subwords.encode


def count_split(source, sp: spm.SentencePieceProcessor):
  """(tokens of each book as int64 [num_books], total words) of `source`.

  Words are whitespace separated; T / W (tokens per word) turns a per-token
  loss (nats) into a per-word one, whose exp is the word-level perplexity
  PG-19 results are reported in.
  """
  lengths = np.zeros(len(source), np.int64)
  words = 0
  for i in range(len(source)):
    text = book_text(source[i])
    lengths[i] = len(sp.encode(text))
    words += len(text.split())
  return lengths, words


def _split_paths(
    data_dir: str | None,
    vocab_size: int,
    sp: spm.SentencePieceProcessor,
    split: str,
):
  """Where a split's counts live; named after the tokenizer's digest."""
  digest = subwords.digest(sp)
  prefix = os.path.join(
      default_data_dir(data_dir), f"pg19_spm{vocab_size}_{digest}_{split}"
  )
  return f"{prefix}_lengths.npy", f"{prefix}_counts.json"


def is_prepared(data_dir: str | None, vocab_size: int, split: str) -> bool:
  """Whether the tokenizer and `split`'s counts exist."""
  path = tokenizer_path(data_dir, vocab_size)
  if not epath.Path(path).exists():
    return False
  sp = _load_tokenizer(path, vocab_size)
  return all(
      epath.Path(p).exists()
      for p in _split_paths(data_dir, vocab_size, sp, split)
  )


def prepare_split(
    data_dir: str | None,
    vocab_size: int,
    split: str,
    source,
    train_source_fn,
    **train_kwargs,
) -> None:
  """Trains the tokenizer if absent, then counts `split` (once).

  Args:
    data_dir: TFDS data dir ("" or None: the default); may be a URL.
    vocab_size: the tokenizer's vocabulary size.
    split: the split's name.
    source: the split (random access, `book_text` feature).
    train_source_fn: () -> the train split, called only to train.
    **train_kwargs: passed to `train_tokenizer`.
  """
  sp = load_or_train_tokenizer(
      data_dir, vocab_size, train_source_fn, **train_kwargs
  )
  lengths_path, counts_path = _split_paths(data_dir, vocab_size, sp, split)
  if epath.Path(lengths_path).exists() and epath.Path(counts_path).exists():
    return
  lengths, words = count_split(source, sp)
  buffer = io.BytesIO()
  np.save(buffer, lengths)
  subwords.write_atomic(lengths_path, buffer.getvalue())
  counts = {
      "books": len(lengths),
      "tokens": int(lengths.sum()),
      "words": int(words),
  }
  subwords.write_atomic(counts_path, json.dumps(counts).encode("utf-8"))


def load_split(data_dir: str | None, vocab_size: int, split: str):
  """(tokenizer, tokens per book, tokens per word) of a prepared split.

  Raises:
    FileNotFoundError: the split is not prepared (says how to prepare it).
    ValueError: the split has no words.
  """
  if not is_prepared(data_dir, vocab_size, split):
    raise FileNotFoundError(
        f"the PG-19 tokenizer or the counts of split {split!r} for"
        f" data.tokenizer_vocab_size={vocab_size} are missing in"
        f" {default_data_dir(data_dir)}; prepare them with python -m"
        " routing_jax.data.datasets.build --name=pg19 --data_dir=..."
        f" --tokenizer_vocab_size={vocab_size}"
    )
  sp = _load_tokenizer(tokenizer_path(data_dir, vocab_size), vocab_size)
  lengths_path, counts_path = _split_paths(data_dir, vocab_size, sp, split)
  lengths = np.load(io.BytesIO(epath.Path(lengths_path).read_bytes()))
  counts = json.loads(epath.Path(counts_path).read_text())
  if counts["words"] == 0:
    raise ValueError(f"PG-19 split {split!r} has no words")
  return sp, lengths, counts["tokens"] / counts["words"]
