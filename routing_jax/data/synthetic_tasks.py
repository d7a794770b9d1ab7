# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Synthetic retrieval tasks whose answers lie beyond a local window.

Byte sequences (vocabulary 256) in the pipeline's batch layout: `inputs`
(right-shifted, start token 0), `targets`, `weights` (the loss), `mask`
(no padding) and `measured` (the answers a retrieval score counts). Used by
`benchmarks/long_range.py` and by the tests that guard routing's ability to
fetch far content.

recall   multi-query associative recall: P key/value pairs ("k v", keys from
         1..key_vocab, values from 128..), random filler from the value
         ids, then queries "k v" for keys drawn from the pairs with
         repetition. Every answer is trained; only a key's first query is
         measured: its answer appears nowhere but in the pairs, far back.
         Repeated queries have their answer nearby: they teach any head the
         lookup (find the token after an earlier occurrence of the key) on
         examples a local window can see.
lookup   one-hop recall: each pair is one token naming its key and value
         (128 + key·V + value); queries are 1 + key, answers 32 + value,
         filler 64..127. A query finds its pair by content alone.
copy     a random span of `span` tokens (ids 64..64+vocab), `gap` random
         tokens, then the span again: every token of the repeat after its
         first is trained and measured. Predicting one means finding the
         previous token's earlier occurrence, `span + gap` back, and
         reading its successor (an induction head), at chance
         log2(vocab) bits for any head that cannot reach that far.
"""

from typing import Optional

import numpy as np

TASKS = ("recall", "lookup", "copy")


def _batch(tokens, weights, measured):
  return {
      "inputs": tokens[:, :-1],
      "targets": tokens[:, 1:],
      "weights": weights,
      "mask": np.ones(weights.shape, bool),
      "measured": measured,
  }


def recall(
    rng: np.random.Generator,
    batch: int,
    seq_len: int,
    *,
    pairs: int = 8,
    queries: int = 16,
    gap: int = 48,
    key_vocab: int = 16,
    value_vocab: int = 16,
) -> dict:
  """Multi-query associative recall (see the module docstring)."""
  if not 1 <= pairs <= key_vocab <= 127 or value_vocab > 128:
    raise ValueError(
        "recall needs 1 <= pairs <= key_vocab <= 127 and value_vocab <= 128"
    )
  need = 1 + 2 * pairs + gap + 2 * queries
  if need > seq_len + 1:
    raise ValueError(f"recall needs seq_len >= {need - 1}, got {seq_len}")
  tokens = np.zeros((batch, seq_len + 1), np.int32)
  weights = np.zeros((batch, seq_len), np.float32)
  measured = np.zeros((batch, seq_len), bool)
  filler = lambda size: rng.integers(128, 128 + value_vocab, size)
  for b in range(batch):
    keys = rng.choice(np.arange(1, key_vocab + 1), pairs, replace=False)
    values = rng.integers(128, 128 + value_vocab, pairs)
    tokens[b, 1 : 1 + 2 * pairs] = np.stack([keys, values], 1).reshape(-1)
    start = 1 + 2 * pairs
    tokens[b, start : start + gap] = filler(gap)
    asked = rng.choice(pairs, queries, replace=queries > pairs)
    s = start + gap
    tokens[b, s : s + 2 * queries] = np.stack(
        [keys[asked], values[asked]], 1
    ).reshape(-1)
    tokens[b, s + 2 * queries :] = filler(seq_len + 1 - s - 2 * queries)
    # The answer token s + 2i + 1 is target s + 2i.
    weights[b, s + 2 * np.arange(queries)] = 1.0
    first = np.unique(asked, return_index=True)[1]
    measured[b, s + 2 * first] = True
  return _batch(tokens, weights, measured)


def lookup(
    rng: np.random.Generator,
    batch: int,
    seq_len: int,
    *,
    pairs: int = 8,
    queries: int = 16,
    gap: int = 48,
    key_vocab: int = 8,
    value_vocab: int = 16,
) -> dict:
  """One-hop recall of single-token pairs (see the module docstring)."""
  if key_vocab * value_vocab > 128 or key_vocab > 31 or value_vocab > 32:
    raise ValueError(
        "lookup needs key_vocab·value_vocab <= 128, "
        "key_vocab <= 31 and value_vocab <= 32"
    )
  if not 1 <= pairs <= key_vocab:
    raise ValueError("lookup needs 1 <= pairs <= key_vocab")
  need = 1 + pairs + gap + 2 * queries
  if need > seq_len + 1:
    raise ValueError(f"lookup needs seq_len >= {need - 1}, got {seq_len}")
  tokens = np.zeros((batch, seq_len + 1), np.int32)
  weights = np.zeros((batch, seq_len), np.float32)
  measured = np.zeros((batch, seq_len), bool)
  for b in range(batch):
    keys = rng.choice(key_vocab, pairs, replace=False)
    values = rng.integers(0, value_vocab, pairs)
    tokens[b, 1 : 1 + pairs] = 128 + keys * value_vocab + values
    start = 1 + pairs
    tokens[b, start : start + gap] = rng.integers(64, 128, gap)
    asked = rng.choice(pairs, queries, replace=queries > pairs)
    s = start + gap
    tokens[b, s : s + 2 * queries] = np.stack(
        [1 + keys[asked], 32 + values[asked]], 1
    ).reshape(-1)
    tokens[b, s + 2 * queries :] = rng.integers(
        64, 128, seq_len + 1 - s - 2 * queries
    )
    weights[b, s + 2 * np.arange(queries)] = 1.0
    first = np.unique(asked, return_index=True)[1]
    measured[b, s + 2 * first] = True
  return _batch(tokens, weights, measured)


def copy(
    rng: np.random.Generator,
    batch: int,
    seq_len: int,
    *,
    span: int = 48,
    gap: int = 16,
    vocab: int = 64,
) -> dict:
  """A span repeated `span + gap` tokens later (see the module docstring)."""
  if span < 2 or gap < 0 or not 2 <= vocab <= 192:
    raise ValueError("copy needs span >= 2, gap >= 0 and 2 <= vocab <= 192")
  need = 1 + 2 * span + gap
  if need > seq_len + 1:
    raise ValueError(f"copy needs seq_len >= {need - 1}, got {seq_len}")
  tokens = rng.integers(64, 64 + vocab, (batch, seq_len + 1)).astype(np.int32)
  tokens[:, 0] = 0
  s = 1 + span + gap
  tokens[:, s : s + span] = tokens[:, 1 : 1 + span]
  weights = np.zeros((batch, seq_len), np.float32)
  # Target t is token t + 1: the repeat's tokens after its first.
  weights[:, s : s + span - 1] = 1.0
  return _batch(tokens, weights, weights > 0)


def make_batch(
    task: str, rng: np.random.Generator, batch: int, seq_len: int, **kw
) -> dict:
  """A batch of `task` (one of TASKS)."""
  if task not in TASKS:
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")
  make = {"recall": recall, "lookup": lookup, "copy": copy}[task]
  return make(rng, batch, seq_len, **kw)


def answer_accuracy(
    logits: np.ndarray, batch: dict, measured: Optional[np.ndarray] = None
) -> tuple[float, float]:
  """(accuracy, bits per answer) of greedy predictions at measured answers."""
  logits = np.asarray(logits, np.float64)
  where = batch["measured"] if measured is None else measured
  targets = batch["targets"]
  top = logits.max(-1, keepdims=True)
  logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
  nll = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
  correct = logits.argmax(-1) == targets
  return float(correct[where].mean()), float(nll[where].mean() / np.log(2))


def recall_sources(batch: dict, pairs: int) -> np.ndarray:
  """recall: for each measured answer position t, the input position of the
  answer token in the pairs (-1 elsewhere)."""
  inputs, measured = batch["inputs"], batch["measured"]
  src = np.full(measured.shape, -1, np.int64)
  for b, t in zip(*np.nonzero(measured)):
    keys = inputs[b, 1 : 1 + 2 * pairs : 2]
    i = int(np.nonzero(keys == inputs[b, t])[0][0])
    src[b, t] = 2 + 2 * i
  return src
