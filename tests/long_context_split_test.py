# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The long-range split of benchmarks/long_context_lm.py.

Bytes are "long-range" when their preceding n-gram last occurred farther
back than the local heads reach; the split's two parts must add up to the
overall loss.
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import long_context_lm  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_long_range_tokens_follow_far_repeats_only():
  # "abcd" at 0..3, again at 20..23 (far with reach 10) and 26..29 (near).
  row = np.frombuffer(b"abcd" + b"x" * 16 + b"abcd" + b"yy" + b"abcd", np.uint8)
  far = long_context_lm.long_range_tokens(row[None], ngram=4, reach=10)[0]
  assert np.nonzero(far)[0].tolist() == [23]  # 23 - 3 = 20 > 10
  # The x run repeats its 4-gram one byte back: near, never far.
  assert not far[:20].any()
  # With a longer reach nothing is far.
  assert not long_context_lm.long_range_tokens(row[None], 4, 20).any()


def test_split_adds_up_to_the_overall_loss():
  rng = np.random.default_rng(0)
  b, n, v = 3, 40, 16
  logits = rng.normal(size=(b, n, v))
  batch = {
      "targets": rng.integers(0, v, (b, n)),
      "weights": (rng.random((b, n)) < 0.9).astype(np.float32),
  }
  far = rng.random((b, n)) < 0.3
  parts = long_context_lm.split_bits(logits, batch, far)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  nll = -np.take_along_axis(logp, batch["targets"][..., None], -1)[..., 0]
  total = float(np.sum(nll * batch["weights"]))
  assert np.isclose(parts["far"][0] + parts["near"][0], total)
  assert parts["far"][1] == float(np.sum(batch["weights"] * far))
  assert parts["far"][1] + parts["near"][1] == float(batch["weights"].sum())
