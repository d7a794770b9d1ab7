# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Tests for routing_jax.storage_errors: retried dataset reads."""

import pickle

import numpy as np
import pytest

from routing_jax import storage_errors
from routing_jax.data.datasets import opening


class Flaky:
  """A data source whose first `fails` reads of each index raise `error`."""

  def __init__(self, fails, error):
    self.fails, self.error, self.reads = fails, error, []

  def __len__(self):
    return 3

  def __getitem__(self, i):
    self.reads.append(i)
    if self.reads.count(i) <= self.fails:
      raise self.error
    return {"x": np.full(2, i)}


@pytest.mark.parametrize(
    "error",
    [
        ConnectionResetError("connection reset by peer"),
        TimeoutError("read timed out"),
        ValueError("UNAVAILABLE: the bucket did not answer"),
        RuntimeError("wrapped"),  # raised from a transient cause, below
    ],
)
def test_transient_read_errors_are_retried(error, caplog):
  if isinstance(error, RuntimeError):
    error.__cause__ = OSError("DEADLINE_EXCEEDED: slow read")
  flaky = Flaky(2, error)
  source = storage_errors.RetryingSource(flaky, "enwik8/train", (0, 0, 0))
  assert len(source) == 3
  np.testing.assert_array_equal(source[1]["x"], [1, 1])
  assert flaky.reads == [1, 1, 1]
  assert sum("try 2 of 4" in r.getMessage() for r in caplog.records) == 1
  assert "enwik8/train" in caplog.records[0].getMessage()


def test_a_read_that_keeps_failing_raises_after_every_try():
  flaky = Flaky(10, ConnectionResetError("reset"))
  source = storage_errors.RetryingSource(flaky, "d", (0, 0))
  with pytest.raises(ConnectionResetError):
    source[0]
  assert flaky.reads == [0, 0, 0]


@pytest.mark.parametrize(
    "error",
    [
        FileNotFoundError("gone"),
        ValueError("DATA_LOSS: bad record"),
        KeyError("bytes"),
        IndexError("record 7 of 3"),
    ],
)
def test_missing_or_damaged_data_is_not_retried(error):
  flaky = Flaky(1, error)
  source = storage_errors.RetryingSource(flaky, "d", (0, 0))
  with pytest.raises(type(error)):
    source[0]
  assert flaky.reads == [0]


def test_the_wrapper_pickles_for_grain_workers():
  source = storage_errors.RetryingSource(Flaky(0, None), "d", (0,))
  again = pickle.loads(pickle.dumps(source))
  np.testing.assert_array_equal(again[2]["x"], [2, 2])


def test_tfds_sources_are_opened_with_retries(monkeypatch):
  monkeypatch.setattr(
      opening.tfds, "data_source", lambda *a, **k: Flaky(1, OSError("EIO"))
  )
  monkeypatch.setattr(storage_errors, "READ_RETRY_DELAYS_S", (0.0,))
  source = opening.tfds_source("enwik8", "train", None)
  assert isinstance(source, storage_errors.RetryingSource)
  np.testing.assert_array_equal(source[0]["x"], [0, 0])
