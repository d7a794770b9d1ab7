# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Splits of datasets as random-access collections of token documents.

A `Documents` object is what the input pipeline cuts into sequences: it
knows how many documents a split has, how long each is (in tokens) and how
to read any token range of one of them. A training sequence never spans two
documents, so what counts as a document is a modelling decision, made here:

  shakespeare, text_files  one play / one file
  enwik8, wikitext103      the whole split, one continuous stream (the
                           convention under which published bits/byte and
                           perplexities are computed)
  pg19                     one book (subword ids, tokenized on read)
  images                   one image (its H*W*C sub-pixels)
  synthetic                fixed-length random sequences
"""

import abc
import functools

import numpy as np

from routing_jax.data import images as images_lib


class Documents(abc.ABC):
  """A split as documents of token ids. Subclasses implement the methods."""

  vocab_size: int = 0

  @abc.abstractmethod
  def lengths(self) -> np.ndarray:
    """Returns int64 [num_documents], each document's length in tokens."""

  @abc.abstractmethod
  def read(self, doc: int, start: int, stop: int) -> np.ndarray:
    """Returns the tokens [start, stop) of document `doc` (1-D integers)."""


class ArrayDocuments(Documents):
  """Documents held in memory as 1-D integer arrays."""

  def __init__(self, docs, vocab_size: int):
    self._docs = [np.asarray(d) for d in docs]
    for i, d in enumerate(self._docs):
      if d.ndim != 1:
        raise ValueError(f"document {i} must be 1-D, got shape {d.shape}")
    self.vocab_size = vocab_size

  def lengths(self) -> np.ndarray:
    return np.array([len(d) for d in self._docs], np.int64)

  def read(self, doc, start, stop):
    return self._docs[doc][start:stop]


class FixedLengthDocuments(Documents):
  """Equal-length documents stored as the rows of one array [N, L]."""

  def __init__(self, rows: np.ndarray, vocab_size: int):
    if rows.ndim != 2:
      raise ValueError(f"rows must be [N, L], got shape {rows.shape}")
    self._rows = rows
    self.vocab_size = vocab_size

  def lengths(self):
    return np.full(self._rows.shape[0], self._rows.shape[1], np.int64)

  def read(self, doc, start, stop):
    return self._rows[doc, start:stop]


class StreamDocuments(Documents):
  """One document: a token stream stored as equal-size TFDS records.

  Records i holds tokens [i*chunk, (i+1)*chunk) under `key` and its start
  under "offset" (checked on read); only the last record may be shorter.
  """

  def __init__(self, source, key: str, vocab_size: int):
    if len(source) == 0:
      raise ValueError(f"the stream dataset has no records ({source})")
    self._source = source
    self._key = key
    self.vocab_size = vocab_size
    first = source[0]
    self._chunk = len(first[key])
    last = source[len(source) - 1]
    self._total = (len(source) - 1) * self._chunk + len(last[key])

  def lengths(self):
    return np.array([self._total], np.int64)

  def _record(self, i: int) -> np.ndarray:
    ex = self._source[i]
    if int(ex["offset"]) != i * self._chunk:
      raise ValueError(
          f"record {i} starts at offset {int(ex['offset'])}, expected"
          f" {i * self._chunk}: the dataset was written out of order or with"
          " another chunk size; rebuild it"
      )
    return ex[self._key]

  def read(self, doc, start, stop):
    if doc != 0:
      raise IndexError(f"a stream has one document, got index {doc}")
    stop = min(stop, self._total)
    first, last = start // self._chunk, (stop - 1) // self._chunk
    parts = [self._record(i) for i in range(first, last + 1)]
    data = np.concatenate(parts) if len(parts) > 1 else parts[0]
    offset = first * self._chunk
    return data[start - offset : stop - offset]


class ImageDocuments(Documents):
  """Images of a TFDS data source, each read as H*W*C sub-pixels."""

  def __init__(self, source, key: str = "image"):
    if len(source) == 0:
      raise ValueError(f"the image dataset has no examples ({source})")
    self._source = source
    self._key = key
    self.vocab_size = 256
    self.image_shape = tuple(np.asarray(source[0][key]).shape)
    if len(self.image_shape) == 2:
      self.image_shape += (1,)
    self._length = int(np.prod(self.image_shape))

  def lengths(self):
    return np.full(len(self._source), self._length, np.int64)

  def read(self, doc, start, stop):
    img = np.asarray(self._source[doc][self._key])
    seq = images_lib.image_to_sequence(img)
    if len(seq) != self._length:
      raise ValueError(
          f"image {doc} has shape {img.shape}, expected {self.image_shape}"
      )
    return seq[start:stop]


class TokenizedDocuments(Documents):
  """Text documents of a data source, tokenized when read (PG-19 books).

  The lengths (in tokens) are given: counting them tokenizes every document,
  which the dataset's preparation does once (see `datasets.pg19`). The most
  recently tokenized documents are kept in a small cache, since consecutive
  reads often hit the same book.
  """

  def __init__(
      self,
      source,
      text_fn,
      encode_fn,
      vocab_size: int,
      lengths: np.ndarray,
      cache_size: int = 8,
  ):
    if len(lengths) != len(source):
      raise ValueError(
          f"{len(lengths)} document lengths for {len(source)} documents"
      )
    self._source = source
    self._text_fn = text_fn
    self._encode_fn = encode_fn
    self.vocab_size = vocab_size
    self._lengths = np.asarray(lengths, np.int64)
    self._cache_size = cache_size
    self._init_unpicklable()

  def _init_unpicklable(self):
    self._tokens = functools.lru_cache(maxsize=self._cache_size)(self._tokenize)

  def __getstate__(self):  # For grain worker processes.
    state = dict(self.__dict__)
    del state["_tokens"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._init_unpicklable()

  def _tokenize(self, doc: int) -> np.ndarray:
    return np.asarray(
        self._encode_fn(self._text_fn(self._source[doc])), np.int32
    )

  def lengths(self):
    return self._lengths

  def read(self, doc, start, stop):
    return self._tokens(doc)[start:stop]


class SyntheticDocuments(Documents):
  """Deterministic uniformly random token documents, ids in [1, vocab).

  Document i depends only on (seed, i), so any document can be read in any
  order. Id 0 is left out: it is the pad/start token.
  """

  def __init__(
      self, num_documents: int, length: int, vocab_size: int, seed: int
  ):
    if vocab_size < 2:
      raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
    self._num = num_documents
    self._length = length
    self._seed = seed
    self.vocab_size = vocab_size

  def lengths(self):
    return np.full(self._num, self._length, np.int64)

  def read(self, doc, start, stop):
    rng = np.random.default_rng([self._seed, doc])
    return rng.integers(1, self.vocab_size, self._length, np.int32)[start:stop]


def decode_bytes(ids) -> str:
  """Byte ids -> text (UTF-8; invalid sequences become U+FFFD)."""
  ids = np.clip(np.asarray(ids).astype(np.int64), 0, 255).astype(np.uint8)
  return bytes(ids).decode("utf-8", errors="replace")


def encode_bytes(text: str) -> np.ndarray:
  """Text -> its UTF-8 bytes as int32 ids [num_bytes]."""
  return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)
