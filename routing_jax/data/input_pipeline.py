# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Input pipeline: datasets -> per-process batches of fixed-length sequences.

Every dataset (text, images, synthetic) gives batches of the same form, a
dict of numpy arrays holding this process's rows of the global batch:

  targets  int32   [local_batch, seq_len]  token ids (bytes 0..255, word or
                                           subword ids, sub-pixels 0..255)
  inputs   int32   [local_batch, seq_len]  targets shifted right by one with
                                           0 as the start token (reference
                                           §3.2): inputs[:, 0] = 0,
                                           inputs[:, 1:] = targets[:, :-1]
  weights  float32 [local_batch, seq_len]  the loss weight of each target:
                                           1 for real targets, 0 for padding
  mask     bool    [local_batch, seq_len]  attention padding mask: False
                                           where the position is padding
                                           (padding keys are never attended)

The two are separate on purpose: a user may zero the loss on some real
tokens (a prompt, a copied span) without hiding them from attention.

Sequences. Each split is a list of documents (`datasets/sources.py` says
what a document is for each dataset). A document of n tokens is cut into
ceil(n / seq_len) consecutive windows; the last one is padded with weight-0
zeros. A sequence therefore never spans two documents, so the model never
attends across a document boundary, and no segment ids are needed (we chose
padding over packing: it costs at most one partial window per document).
For byte data 0 serves as both padding and start token, as in the paper's
byte models (byte 0 never occurs in text).

Order and sharding. Training sequence g (g = step * batch_size + row) is
window perm_e[g mod N] of epoch e = g div N, with perm_e a permutation drawn
from (seed, e): a fresh shuffle every epoch, a function of the seed only.
A process reads the rows of every global batch that its devices hold
(`rows`; the trainer derives them from the batch sharding, see
`routing_jax.multihost`), by default rows [p * B/P, (p+1) * B/P) for process
p of P, so the processes together see exactly the batches one process would.

Checkpointing. `BatchIterator.get_state()` is {"step": k, ...} (JSON), and
`set_state` resumes at exactly batch k. Batches are computed by index, so
the state does not depend on prefetching, worker count or process count.

We use grain only to run this index-based source with thread prefetch (or
`num_workers` worker processes); the shuffle and sharding are the index
arithmetic above, which makes the halves-of-a-global-batch guarantee exact.
"""

import dataclasses
import functools
import math
import weakref
from typing import Any, Callable

import numpy as np

from routing_jax.data import corpus
from routing_jax.data.datasets import opening
from routing_jax.data.datasets import sources

DATASETS = {
    "shakespeare": ("train", "validation", "test"),
    "enwik8": ("train", "validation", "test"),
    "wikitext103": ("train", "validation", "test"),
    "text_files": ("train", "validation", "test"),
    "pg19": ("train", "validation", "test"),
    "cifar10": ("train", "test"),
    "imagenet_resized/64x64": ("train", "validation"),
    "fashion_mnist": ("train", "test"),
    "synthetic": ("train", "validation", "test"),
}
_INFINITE = 1 << 62
_SYNTHETIC_TRAIN_SEQUENCES = 8192


class SequenceIndex:
  """Sequence number -> (document, start): fixed windows per document."""

  def __init__(self, lengths: np.ndarray, seq_len: int):
    lengths = np.asarray(lengths, np.int64)
    counts = -(-lengths // seq_len)
    self.seq_len = seq_len
    self.starts = np.concatenate([[0], np.cumsum(counts)])
    self.size = int(self.starts[-1])

  def locate(self, i: int) -> tuple[int, int]:
    doc = int(np.searchsorted(self.starts, i, side="right")) - 1
    return doc, int(i - self.starts[doc]) * self.seq_len


class _Reader:
  """Reads sequence i of a split as (targets, weights), both [seq_len]."""

  def __init__(
      self, docs: sources.Documents, seq_len: int, vocab_size: int, name: str
  ):
    self.docs = docs
    self.index = SequenceIndex(docs.lengths(), seq_len)
    if self.index.size == 0:
      raise ValueError(f"dataset {name!r}: the split has no tokens")
    self.seq_len = seq_len
    self.vocab_size = vocab_size
    self.name = name

  def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
    doc, start = self.index.locate(i)
    tokens = np.asarray(self.docs.read(doc, start, start + self.seq_len))
    if tokens.size and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
      raise ValueError(
          f"dataset {self.name!r}: document {doc} holds token id"
          f" {self._worst(tokens)} outside the vocabulary"
          f" [0, {self.vocab_size})"
      )
    targets = np.zeros(self.seq_len, np.int32)
    weights = np.zeros(self.seq_len, np.float32)
    targets[: len(tokens)] = tokens
    weights[: len(tokens)] = 1.0
    return targets, weights

  def _worst(self, tokens: np.ndarray) -> int:
    high = int(tokens.max())
    return high if high >= self.vocab_size else int(tokens.min())


def _make_batch(rows: list[tuple[np.ndarray, np.ndarray]]) -> dict:
  targets = np.stack([t for t, _ in rows])
  weights = np.stack([w for _, w in rows])
  inputs = np.zeros_like(targets)
  inputs[:, 1:] = targets[:, :-1]
  return {
      "inputs": inputs,
      "targets": targets,
      "weights": weights,
      "mask": weights > 0,
  }


def _local_rows(global_batch: int, process_index: int, process_count: int):
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(
        f"process_index must be in [0, process_count), got {process_index}"
        f" of {process_count}"
    )
  if global_batch % process_count:
    raise ValueError(
        f"data.batch_size (the global batch, {global_batch}) must be"
        f" divisible by the number of processes ({process_count})"
    )
  local = global_batch // process_count
  return np.arange(process_index * local, (process_index + 1) * local)


def _check_rows(rows, global_batch: int) -> np.ndarray:
  rows = np.asarray(rows, np.int64)
  if (
      rows.ndim != 1
      or not rows.size
      or np.any(np.diff(rows) <= 0)
      or rows[0] < 0
      or rows[-1] >= global_batch
  ):
    raise ValueError(
        "rows must be ascending indices in [0, data.batch_size="
        f"{global_batch}), got {rows.tolist()}"
    )
  return rows


class _TrainSource:
  """Random-access local train batches: item k is batch `start + k`."""

  def __init__(
      self,
      reader: _Reader,
      rows: np.ndarray,
      global_batch: int,
      seed: int,
      start: int,
  ):
    self._reader = reader
    self._rows = rows
    self._batch = global_batch
    self._seed = seed
    self._start = start

  def __len__(self):
    return _INFINITE - self._start

  @functools.lru_cache(maxsize=4)
  def _permutation(self, epoch: int) -> np.ndarray:
    rng = np.random.default_rng([self._seed, epoch])
    return rng.permutation(self._reader.index.size)

  def __getitem__(self, k: int) -> dict:
    g = (self._start + int(k)) * self._batch + self._rows
    epochs, positions = np.divmod(g, self._reader.index.size)
    return _make_batch([
        self._reader.read(int(self._permutation(int(e))[p]))
        for e, p in zip(epochs, positions)
    ])


class _EvalSource:
  """The eval split in order, padded to whole global batches with weight 0."""

  def __init__(self, reader: _Reader, rows: np.ndarray, global_batch: int):
    self._reader = reader
    self._rows = rows
    self._batch = global_batch

  def __len__(self):
    return -(-self._reader.index.size // self._batch)

  def __getitem__(self, b: int) -> dict:
    empty = (
        np.zeros(self._reader.seq_len, np.int32),
        np.zeros(self._reader.seq_len, np.float32),
    )
    g = int(b) * self._batch + self._rows
    return _make_batch([
        self._reader.read(int(i)) if i < self._reader.index.size else empty
        for i in g
    ])


def _grain_iterator(source, num_workers: int, num_threads: int = 2):
  import grain  # pylint: disable=g-import-not-at-top

  ds = grain.MapDataset.source(source).to_iter_dataset(
      grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=4)
  )
  if num_workers > 0:
    from absl import flags  # pylint: disable=g-import-not-at-top

    if not flags.FLAGS.is_parsed():
      # grain's workers read absl flags; outside absl.app nobody parsed them.
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return iter(ds)


def _plain(batch: dict) -> dict:
  """Copies worker outputs (grain shared-memory arrays) into plain arrays,
  so their shared memory is released as soon as grain hands them over."""
  return {k: np.array(v) for k, v in batch.items()}


def _close(it) -> None:
  """Stops an iterator's prefetch threads / worker processes."""
  close = getattr(it, "close", None)
  if close is not None:
    close()


class BatchIterator:
  """Infinite iterator of local train batches; checkpointable.

  `get_state()` returns a JSON-able dict; `set_state(state)` makes the next
  batch the one that followed when the state was taken.
  """

  def __init__(
      self,
      make_source: Callable[[int], Any],
      fingerprint: dict,
      num_workers: int = 0,
  ):
    self._make_source = make_source
    self._fingerprint = dict(fingerprint)
    self._num_workers = num_workers
    self._step = 0
    self._it = None
    self._finalizer = None

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    if self._it is None:
      self._it = _grain_iterator(
          self._make_source(self._step), self._num_workers
      )
      # Closes the workers at garbage collection or interpreter exit.
      self._finalizer = weakref.finalize(self, _close, self._it)
    batch = next(self._it)
    self._step += 1
    return _plain(batch) if self._num_workers else batch

  def close(self) -> None:
    """Stops prefetching (worker processes included); `next` restarts."""
    if self._finalizer is not None:
      self._finalizer()  # Calls _close(self._it) once.
    self._it = self._finalizer = None

  @property
  def step(self) -> int:
    """The number of batches returned so far (the next batch's index)."""
    return self._step

  def get_state(self) -> dict:
    return {"step": self._step, **self._fingerprint}

  def set_state(self, state: dict) -> None:
    diffs = {
        k: (state.get(k), v)
        for k, v in self._fingerprint.items()
        if state.get(k) != v
    }
    if diffs:
      raise ValueError(
          "data iterator state is from a different input pipeline"
          f" (field: (saved, current)): {diffs}"
      )
    step = int(state["step"])
    if step < 0:
      raise ValueError(f"data iterator state step must be >= 0, got {step}")
    self.close()
    self._step = step


class EvalBatches:
  """The eval split as a finite iterable of local batches (re-iterable).

  Every process gets the same number of batches; rows past the end of the
  split are padding (weights 0).
  """

  def __init__(self, source: _EvalSource, num_workers: int = 0):
    self._source = source
    self._num_workers = num_workers

  def __len__(self):
    return len(self._source)

  def __iter__(self):
    it = _grain_iterator(self._source, self._num_workers)
    try:
      for batch in it:
        yield _plain(batch) if self._num_workers else batch
    finally:  # Exhausted, or the loop stopped early.
      _close(it)


def batch_documents(
    train_docs: sources.Documents,
    eval_docs: sources.Documents,
    *,
    seq_len: int,
    batch_size: int,
    seed: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    vocab_size: int | None = None,
    num_workers: int = 0,
    name: str = "custom",
    rows: np.ndarray | None = None,
) -> tuple[BatchIterator, EvalBatches]:
  """Batches two splits of documents (the core of `create_datasets`).

  Args:
    train_docs: the training split.
    eval_docs: the evaluation split.
    seq_len: tokens per sequence.
    batch_size: the global batch, in sequences.
    seed: shuffling seed.
    process_index: this process.
    process_count: number of processes reading shards of each batch.
    vocab_size: valid ids are [0, vocab_size) (default: the documents').
    num_workers: grain worker processes (0: threads in this process).
    name: for messages and the iterator state.
    rows: the global rows of every batch this process reads, ascending
      (`multihost.process_rows` of the batch sharding); default: block
      `process_index` of `process_count` equal blocks.

  Returns:
    (train iterator, eval iterable).
  """
  if seq_len < 1 or batch_size < 1:
    raise ValueError(
        f"data.seq_len and data.batch_size must be >= 1, got {seq_len} and"
        f" {batch_size}"
    )
  if rows is None:
    rows = _local_rows(batch_size, process_index, process_count)
  rows = _check_rows(rows, batch_size)
  train = _Reader(
      train_docs, seq_len, vocab_size or train_docs.vocab_size, name
  )
  evals = _Reader(eval_docs, seq_len, vocab_size or eval_docs.vocab_size, name)
  fingerprint = {
      "dataset": name,
      "seq_len": seq_len,
      "batch_size": batch_size,
      "seed": seed,
      "num_sequences": train.index.size,
  }
  train_iter = BatchIterator(
      lambda start: _TrainSource(train, rows, batch_size, seed, start),
      fingerprint,
      num_workers,
  )
  return train_iter, EvalBatches(
      _EvalSource(evals, rows, batch_size), num_workers
  )


@dataclasses.dataclass
class Datasets:
  """What `create_datasets` returns.

  Attributes:
    train: infinite, checkpointable iterator of local train batches.
    eval: finite, re-iterable local batches of `data.eval_split`.
    vocab_size: ids lie in [0, vocab_size) (the model needs at least this).
    unit: what a token is and how its loss is reported: "byte", "word",
      "subword" (per word), "subword_byte" (per byte), "subpixel", "token".
    local_batch_size: rows per batch in this process.
    tokens_per_unit: subword tokens per reported unit on the eval split:
      per word for pg19 (word perplexity = exp(loss_per_token * it)), per
      byte for subword text_files (bits/byte = loss_per_token * it / ln 2).
    image_shape: (H, W, C) for image datasets.
    decode: ids -> text (text datasets), else None.
    encode: text -> int32 ids (text datasets), else None.
  """

  train: BatchIterator
  eval: EvalBatches
  vocab_size: int
  unit: str
  local_batch_size: int
  tokens_per_unit: float | None = None
  image_shape: tuple[int, int, int] | None = None
  decode: Callable[[Any], str] | None = None
  encode: Callable[[str], np.ndarray] | None = None


def create_datasets(
    data_config,
    *,
    vocab_size: int | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    rows: np.ndarray | None = None,
) -> Datasets:
  """Creates this process's train and eval batches from `config.data`.

  Args:
    data_config: the `data` section of the config (name, seq_len,
      batch_size, data_dir, manual_dir, text_files, eval_split,
      tokenizer_vocab_size, seed, num_workers).
    vocab_size: the model's vocabulary size; must cover the dataset's ids
      (synthetic data draws ids below it; default 256).
    process_index: this process (default: jax.process_index()).
    process_count: number of processes (default: jax.process_count()).
    rows: the rows of each global batch this process reads (see
      `batch_documents`); the trainer passes `multihost.process_rows` of its
      batch sharding. Default: this process's 1/process_count block.

  Returns:
    Datasets.

  Raises:
    ValueError: unknown dataset or split, a batch size the processes cannot
      share, a vocabulary too small for the data, a wrong image seq_len.
    FileNotFoundError: the dataset is not prepared / its files are missing.
  """
  cfg = data_config
  if cfg.name not in DATASETS:
    raise ValueError(
        f"data.name must be one of {sorted(DATASETS)}, got {cfg.name!r}"
    )
  if cfg.eval_split not in DATASETS[cfg.name]:
    raise ValueError(
        f"data.eval_split must be one of {DATASETS[cfg.name]} for"
        f" {cfg.name!r}, got {cfg.eval_split!r}"
    )
  if rows is None:
    if process_index is None or process_count is None:
      import jax  # pylint: disable=g-import-not-at-top

      if process_index is None:
        process_index = jax.process_index()
      if process_count is None:
        process_count = jax.process_count()
    rows = _local_rows(cfg.batch_size, process_index, process_count)
  rows = _check_rows(rows, cfg.batch_size)

  if cfg.name == "shakespeare":
    train_docs = sources.ArrayDocuments(corpus.documents("train"), 256)
    eval_docs = sources.ArrayDocuments(corpus.documents(cfg.eval_split), 256)
    extra = dict(
        unit="byte", decode=sources.decode_bytes, encode=sources.encode_bytes
    )
  elif cfg.name == "synthetic":
    v = vocab_size or 256
    train_docs = sources.SyntheticDocuments(
        _SYNTHETIC_TRAIN_SEQUENCES, cfg.seq_len, v, cfg.seed
    )
    eval_docs = sources.SyntheticDocuments(
        4 * cfg.batch_size, cfg.seq_len, v, cfg.seed + 1_000_003
    )
    extra = dict(unit="token")
  else:
    train_docs, extra = opening.open_split(cfg, "train")
    eval_docs, eval_extra = opening.open_split(cfg, cfg.eval_split)
    extra.update(eval_extra)  # E.g. pg19's tokens_per_unit of eval_split.
  data_vocab = max(train_docs.vocab_size, eval_docs.vocab_size)
  if vocab_size is not None and vocab_size < data_vocab:
    raise ValueError(
        f"model vocab_size {vocab_size} is smaller than dataset"
        f" {cfg.name!r}'s vocabulary ({data_vocab} ids)"
    )
  if extra.get("image_shape") is not None:
    needed = math.prod(extra["image_shape"])
    if cfg.seq_len != needed:
      raise ValueError(
          f"data.seq_len must be H*W*C = {needed} for {cfg.name!r} images"
          f" of shape {extra['image_shape']}, got {cfg.seq_len}"
      )
  train, evals = batch_documents(
      train_docs,
      eval_docs,
      seq_len=cfg.seq_len,
      batch_size=cfg.batch_size,
      seed=cfg.seed,
      vocab_size=vocab_size or data_vocab,
      num_workers=cfg.num_workers,
      name=cfg.name,
      rows=rows,
  )
  return Datasets(
      train=train,
      eval=evals,
      vocab_size=data_vocab,
      local_batch_size=len(rows),
      **extra,
  )
