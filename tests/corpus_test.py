# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Tests of the embedded Shakespeare corpus (routing_jax.data.corpus)."""

import os
import socket

import numpy as np
import pytest

from routing_jax.data import corpus

SHARED = "/work/shared/data/shakespeare"


def test_splits_are_disjoint_whole_plays_covering_all():
  splits = {s: corpus.plays(s) for s in corpus.SPLITS}
  assert splits["validation"] == ["julius-caesar", "twelfth-night"]
  assert splits["test"] == ["macbeth", "much-ado-about-nothing"]
  assert len(splits["train"]) == 34
  names = [p for s in splits.values() for p in s]
  assert len(names) == len(set(names)) == corpus.NUM_PLAYS
  assert sorted(names) == corpus.all_plays()


def test_byte_counts_add_up_to_the_38_plays():
  sizes = {s: len(corpus.load_split(s)) for s in corpus.SPLITS}
  assert sum(sizes.values()) == corpus.TOTAL_BYTES == 5_000_636
  assert sizes["validation"] == 229_104
  assert sizes["test"] == 223_181
  for split in corpus.SPLITS:
    docs = corpus.documents(split)
    assert [d.dtype for d in docs] == [np.uint8] * len(docs)
    assert sum(len(d) for d in docs) == sizes[split]
    # load_split is the documents joined, in plays() order, no separators.
    assert b"".join(d.tobytes() for d in docs) == corpus.load_split(split)


def test_documents_are_the_plays_in_order():
  docs = corpus.documents("test")
  assert docs[0].tobytes().startswith(b"Macbeth\n")
  assert docs[1].tobytes().startswith(b"Much Ado About Nothing\n")
  assert all(d.tobytes().endswith(b"\n") for d in docs)


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="dev data absent")
def test_archive_matches_the_source_files_byte_for_byte():
  for name in corpus.all_plays():
    with open(os.path.join(SHARED, name + ".txt"), "rb") as f:
      assert corpus.load_play(name) == f.read(), name


def test_loading_needs_no_network(monkeypatch):
  def refuse(*args, **kwargs):
    raise AssertionError("network access attempted")

  monkeypatch.setattr(socket.socket, "connect", refuse)
  corpus._archive.cache_clear()  # pylint: disable=protected-access
  assert len(corpus.load_split("validation")) == 229_104


def test_unigram_baseline_is_a_cross_entropy_of_train_statistics():
  bpb = corpus.unigram_bits_per_byte("validation")
  # Recompute directly from the bytes.
  train = np.frombuffer(corpus.load_split("train"), np.uint8)
  valid = np.frombuffer(corpus.load_split("validation"), np.uint8)
  counts = np.bincount(train, minlength=256).astype(np.float64)
  p = (counts + 1) / (counts.sum() + 256)
  assert bpb == pytest.approx(-np.log2(p[valid]).mean(), rel=1e-9)
  # Gibbs: cross-entropy >= the split's own unigram entropy, and well
  # below 8 bits (uniform bytes).
  assert corpus.unigram_entropy_bits("validation") <= bpb < 5.0
  assert bpb == pytest.approx(4.835, abs=1e-3)


def test_bad_names_raise():
  with pytest.raises(ValueError, match="split must be one of"):
    corpus.plays("dev")
  with pytest.raises(ValueError, match="unknown play"):
    corpus.load_play("cardenio")


def test_describe_lists_every_split():
  text = corpus.describe()
  assert "validation: 229,104 bytes (julius-caesar, twelfth-night)" in text
  assert "train: 4,548,351 bytes (34 plays)" in text
