# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Tests for routing_jax.data.synthetic_tasks: the copy task's layout."""

import numpy as np
import pytest

from routing_jax.data import synthetic_tasks


def test_copy_answers_lie_span_plus_gap_back():
  span, gap = 12, 5
  batch = synthetic_tasks.make_batch(
      "copy", np.random.default_rng(0), 3, 40, span=span, gap=gap, vocab=8
  )
  inputs, targets = batch["inputs"], batch["targets"]
  np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])
  assert (inputs[:, 0] == 0).all() and inputs[:, 1:].min() >= 64
  assert inputs.max() < 72
  measured = np.nonzero(batch["measured"][0])[0]
  # Every measured target repeats the token span + gap earlier, and its
  # input (the previous token) occurs there too: an induction step.
  assert len(measured) == span - 1
  for t in measured:
    assert targets[:, t].tolist() == inputs[:, t + 1 - span - gap].tolist()
    assert inputs[:, t].tolist() == inputs[:, t - span - gap].tolist()
  np.testing.assert_array_equal(batch["weights"] > 0, batch["measured"])
  assert batch["mask"].all()


def test_copy_refuses_a_sequence_too_short():
  with pytest.raises(ValueError, match="seq_len >= 29"):
    synthetic_tasks.copy(np.random.default_rng(0), 1, 20, span=12, gap=5)
  with pytest.raises(ValueError, match="task must be one of"):
    synthetic_tasks.make_batch("paste", np.random.default_rng(0), 1, 20)
