# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Tests of routing_jax.data.input_pipeline: batch format, order, state,
shards."""

import gzip
import json
import zipfile

import numpy as np
import pytest

from experiments import common
from routing_jax.data import corpus
from routing_jax.data import datasets
from routing_jax.data import input_pipeline
from routing_jax.data.datasets import archives
from routing_jax.data.datasets import enwik8
from routing_jax.data.datasets import idx
from routing_jax.data.datasets import sources


def _cfg(**overrides):
  cfg = common.base_config().data
  cfg.update(seq_len=64, batch_size=4)
  cfg.update(**overrides)
  return cfg


def _create(cfg, index=0, count=1, **kwargs):
  return input_pipeline.create_datasets(
      cfg, process_index=index, process_count=count, **kwargs
  )


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_same(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


def test_shakespeare_batch_format_and_shift():
  ds = _create(_cfg())
  assert ds.vocab_size == 256 and ds.unit == "byte"
  assert ds.local_batch_size == 4
  for batch in _take(ds.train, 3) + [next(iter(ds.eval))]:
    assert batch["inputs"].dtype == batch["targets"].dtype == np.int32
    assert batch["weights"].dtype == np.float32
    assert batch["targets"].shape == (4, 64)
    np.testing.assert_array_equal(
        batch["inputs"][:, 1:], batch["targets"][:, :-1]
    )
    assert (batch["inputs"][:, 0] == 0).all()
    assert set(np.unique(batch["weights"])) <= {0.0, 1.0}
    # Padding is exactly the zero targets (no NUL byte in the text).
    np.testing.assert_array_equal(batch["weights"] > 0, batch["targets"] > 0)
  text = ds.decode(batch["targets"][0])
  assert text.encode() in corpus.load_split("validation")


def test_train_order_is_deterministic_in_the_seed():
  a = _take(_create(_cfg()).train, 3)
  b = _take(_create(_cfg()).train, 3)
  c = _take(_create(_cfg(seed=1)).train, 3)
  for x, y in zip(a, b):
    _assert_same(x, y)
  assert not np.array_equal(a[0]["targets"], c[0]["targets"])


def test_get_state_set_state_reproduce_the_next_batch():
  it = _create(_cfg()).train
  _take(it, 2)
  state = json.loads(json.dumps(it.get_state()))  # JSON round trip.
  assert state["step"] == 2
  expected = _take(it, 3)
  resumed = _create(_cfg()).train
  resumed.set_state(state)
  for want, got in zip(expected, _take(resumed, 3)):
    _assert_same(want, got)
  # Rewinding the same iterator also works.
  it.set_state(state)
  _assert_same(next(it), expected[0])


def test_set_state_rejects_a_different_pipeline():
  state = _create(_cfg()).train.get_state()
  with pytest.raises(ValueError, match="different input pipeline.*seq_len"):
    _create(_cfg(seq_len=32)).train.set_state(state)


def test_processes_read_their_halves_of_the_global_batch():
  whole = _create(_cfg())
  halves = [_create(_cfg(), index=p, count=2) for p in range(2)]
  assert halves[0].local_batch_size == 2
  for g, h0, h1 in zip(
      _take(whole.train, 3),
      _take(halves[0].train, 3),
      _take(halves[1].train, 3),
  ):
    for k in g:
      np.testing.assert_array_equal(np.concatenate([h0[k], h1[k]]), g[k])
  evals = [list(d.eval) for d in [whole] + halves]
  assert len(evals[0]) == len(evals[1]) == len(evals[2])
  for g, h0, h1 in zip(*evals):
    np.testing.assert_array_equal(
        np.concatenate([h0["targets"], h1["targets"]]), g["targets"]
    )
  with pytest.raises(ValueError, match="divisible by the number of processes"):
    _create(_cfg(batch_size=6), index=0, count=4)
  with pytest.raises(ValueError, match="process_index must be in"):
    _create(_cfg(), index=2, count=2)


def test_rows_from_the_batch_sharding():
  """A process reads exactly the rows it is given (its devices' slices),
  e.g. all of them when its "tensor" group spans the other processes."""
  whole = _create(_cfg())
  all_rows = _create(_cfg(), index=1, count=2, rows=np.arange(4))
  blocks = _create(_cfg(), index=1, count=2, rows=np.array([0, 3]))
  assert all_rows.local_batch_size == 4 and blocks.local_batch_size == 2
  for g, a, b in zip(
      _take(whole.train, 2), _take(all_rows.train, 2), _take(blocks.train, 2)
  ):
    _assert_same(a, g)
    _assert_same(b, {k: v[[0, 3]] for k, v in g.items()})
  with pytest.raises(ValueError, match=r"ascending indices in \[0, data.bat"):
    _create(_cfg(), rows=np.array([3, 1]))
  with pytest.raises(ValueError, match="rows must be"):
    _create(_cfg(), rows=np.array([4]))


def _marked_documents(lengths, vocab=1000):
  """Document d holds only the token d+1, so a sequence's source is known."""
  return sources.ArrayDocuments(
      [np.full(n, d + 1, np.int32) for d, n in enumerate(lengths)], vocab
  )


def test_sequences_never_cross_documents_and_cover_each_epoch_once():
  lengths = [5, 17, 16, 1, 40]
  docs = _marked_documents(lengths)
  seq_len, batch = 8, 3
  index = input_pipeline.SequenceIndex(docs.lengths(), seq_len)
  n = index.size
  assert n == sum(-(-x // seq_len) for x in lengths) == 12
  train, _ = input_pipeline.batch_documents(
      docs, docs, seq_len=seq_len, batch_size=batch, seed=3
  )
  rows = [
      (t, w)
      for b in _take(train, 2 * n // batch)
      for t, w in zip(b["targets"], b["weights"])
  ]
  for t, w in rows:
    real = t[w > 0]
    assert len(set(real.tolist())) == 1  # One document per sequence.
    assert (t[w == 0] == 0).all() and (w[: len(real)] == 1).all()
  for epoch in (rows[:n], rows[n:]):
    # Each epoch reads every token of every document exactly once.
    tokens = np.concatenate([t[w > 0] for t, w in epoch])
    np.testing.assert_array_equal(np.bincount(tokens, minlength=6)[1:], lengths)
  assert [t.tolist() for t, _ in rows[:n]] != [t.tolist() for t, _ in rows[n:]]


def test_eval_is_finite_ordered_and_padded():
  lengths = [10, 3, 7]
  docs = _marked_documents(lengths)
  _, evals = input_pipeline.batch_documents(docs, docs, seq_len=4, batch_size=4)
  batches = list(evals)
  assert len(batches) == len(evals) == 2  # 3 + 1 + 2 = 6 sequences.
  targets = np.concatenate([b["targets"] for b in batches])
  weights = np.concatenate([b["weights"] for b in batches])
  assert weights.sum() == sum(lengths)
  assert weights[6:].sum() == 0  # Two padding rows.
  np.testing.assert_array_equal(
      targets[weights > 0], np.repeat([1, 2, 3], lengths)
  )
  assert len(list(evals)) == 2  # Re-iterable.


def test_token_ids_are_checked_against_the_vocabulary():
  with pytest.raises(ValueError, match="vocab_size 100 is smaller than"):
    _create(_cfg(), vocab_size=100)
  bad = sources.ArrayDocuments([np.array([1, 2, 300])], vocab_size=256)
  train, _ = input_pipeline.batch_documents(bad, bad, seq_len=4, batch_size=1)
  with pytest.raises(ValueError, match="token id 300 outside the vocabulary"):
    next(train)


def test_synthetic_is_deterministic_and_in_range():
  cfg = _cfg(name="synthetic", seq_len=16, batch_size=2)
  a = _create(cfg, vocab_size=50)
  b = _create(cfg, vocab_size=50)
  x, y = next(a.train), next(b.train)
  _assert_same(x, y)
  assert x["targets"].min() >= 1 and x["targets"].max() < 50
  assert (x["weights"] == 1).all()
  ev = next(iter(a.eval))
  assert not np.array_equal(ev["targets"], x["targets"])


def test_config_errors_name_the_field():
  with pytest.raises(ValueError, match="data.name must be one of"):
    _create(_cfg(name="imagenet"))
  with pytest.raises(ValueError, match="data.eval_split must be one of"):
    _create(_cfg(name="cifar10", eval_split="validation"))
  with pytest.raises(ValueError, match="data.seq_len and data.batch_size"):
    _create(_cfg(seq_len=0))
  with pytest.raises(ValueError, match="data.manual_dir must name"):
    _create(_cfg(name="fashion_mnist", eval_split="test"))
  with pytest.raises(
      FileNotFoundError, match="not prepared.*datasets.build --name=enwik8"
  ):
    _create(_cfg(name="enwik8", data_dir="/nonexistent/tfds"))


def test_fashion_mnist_from_idx_directory(tmp_path):
  rng = np.random.default_rng(0)
  imgs = {
      "train": rng.integers(0, 256, (5, 4, 4), dtype=np.uint8),
      "test": rng.integers(0, 256, (3, 4, 4), dtype=np.uint8),
  }
  for split, arr in imgs.items():
    img_name, label_name = idx.FILES[split]
    for name, data in ((img_name, arr), (label_name, arr[:, 0, 0])):
      header = bytes([0, 0, 8, data.ndim]) + b"".join(
          d.to_bytes(4, "big") for d in data.shape
      )
      (tmp_path / (name + ".gz")).write_bytes(
          gzip.compress(header + data.tobytes())
      )
  cfg = _cfg(
      name="fashion_mnist",
      manual_dir=str(tmp_path),
      seq_len=16,
      batch_size=3,
      eval_split="test",
  )
  ds = _create(cfg)
  assert ds.image_shape == (4, 4, 1)
  batch = next(iter(ds.eval))
  np.testing.assert_array_equal(batch["targets"], imgs["test"].reshape(3, 16))
  with pytest.raises(ValueError, match="H\\*W\\*C = 16"):
    _create(
        _cfg(
            name="fashion_mnist",
            manual_dir=str(tmp_path),
            seq_len=15,
            eval_split="test",
        )
    )


def test_enwik8_stream_reads_across_record_boundaries(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  rng = np.random.default_rng(0)
  payload = rng.integers(1, 256, 300_000, dtype=np.uint8).tobytes()
  with zipfile.ZipFile(manual / "enwik8.zip", "w") as z:
    z.writestr("enwik8", payload)
  datasets.prepare(
      "enwik8",
      data_dir=str(tmp_path / "tfds"),
      manual_dir=str(manual),
      archive_checksum=archives.ArchiveChecksum.of_file(manual / "enwik8.zip"),
  )
  # Evaluate on train (5 records of 64 KiB): windows of 1000 straddle them.
  cfg = _cfg(
      name="enwik8",
      data_dir=str(tmp_path / "tfds"),
      seq_len=1000,
      batch_size=64,
      eval_split="train",
  )
  ds = _create(cfg)
  got = np.concatenate([b["targets"][b["weights"] > 0] for b in ds.eval])
  lo, hi = enwik8.split_bounds(len(payload))["train"]
  assert (
      got.tobytes()
      == np.frombuffer(payload[lo:hi], np.uint8).astype(np.int32).tobytes()
  )
  batch = next(ds.train)
  assert batch["targets"].shape == (64, 1000) and ds.unit == "byte"


@pytest.mark.slow
def test_worker_processes_give_the_same_batches_and_state():
  cfg = _cfg()
  expected = _take(_create(cfg).train, 4)
  cfg.num_workers = 1
  ds = _create(cfg)
  try:
    got = _take(ds.train, 2)
    state = ds.train.get_state()
    ds.train.set_state(state)
    got += _take(ds.train, 2)
  finally:
    ds.train.close()
  for want, batch in zip(expected, got):
    assert type(batch["targets"]) is np.ndarray  # Not shared memory.
    _assert_same(want, batch)


def test_text_files_pipeline_keeps_files_apart(tmp_path):
  # File i holds only the letter chr(97 + i), so a sequence's file is known.
  for i in range(6):
    (tmp_path / f"f{i}.txt").write_bytes(bytes([97 + i]) * (30 + 7 * i))
  cfg = _cfg(
      name="text_files",
      text_files=str(tmp_path / "*.txt"),
      data_dir=str(tmp_path / "tfds"),
      seq_len=16,
      batch_size=2,
      eval_split="validation",
  )
  ds = _create(cfg)
  for batch in _take(ds.train, 10) + list(ds.eval):
    for t, w in zip(batch["targets"], batch["weights"]):
      assert len(set(t[w > 0].tolist())) <= 1  # Eval pads with empty rows.
    assert (batch["weights"][:, 0] > 0).any()
  eval_bytes = np.concatenate([b["targets"][b["weights"] > 0] for b in ds.eval])
  (val_path,) = datasets.text_files.assign_splits(
      sorted(str(p) for p in tmp_path.glob("*.txt"))
  )["validation"]
  with open(val_path, "rb") as f:
    assert eval_bytes.astype(np.uint8).tobytes() == f.read()


def test_text_files_as_sentencepiece_subwords_report_bits_per_byte(tmp_path):
  """data.tokenizer="sentencepiece": a model trained once on the train
  files (saved next to the dataset), the eval split's tokens per byte
  counted independently, the same ids from a given .model file."""
  import math  # pylint: disable=g-import-not-at-top
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  from routing_jax.training import metrics  # pylint: disable=g-import-not-at-top

  files = tmp_path / "files"
  files.mkdir()
  for i, play in enumerate(corpus.documents("train")[:6]):
    (files / f"p{i}.txt").write_bytes(play[:20000].tobytes() + "é\n".encode())
  cfg = _cfg(
      name="text_files",
      text_files=str(files / "*.txt"),
      data_dir=str(tmp_path / "tfds"),
      tokenizer="sentencepiece",
      tokenizer_vocab_size=640,
      seq_len=32,
      batch_size=2,
  )
  ds = _create(cfg)
  (model_path,) = (tmp_path / "tfds").glob("text_files/*/spm640.model")
  sp = spm.SentencePieceProcessor(model_file=str(model_path))
  (val_path,) = datasets.text_files.assign_splits(
      sorted(str(p) for p in files.glob("*.txt"))
  )["validation"]
  text = open(val_path, encoding="utf-8").read()
  ids = sp.encode(text)
  assert sp.decode(ids) == text and ds.decode(ds.encode(text)) == text
  assert (ds.unit, ds.vocab_size) == ("subword_byte", 640)
  assert ds.tokens_per_unit == len(ids) / len(text.encode("utf-8")) < 0.8
  got = np.concatenate([b["targets"][b["weights"] > 0] for b in ds.eval])
  np.testing.assert_array_equal(got, ids)
  name, value = metrics.paper_metric(ds.unit, 2.0, ds.tokens_per_unit)
  assert (name, value) == (
      "bits_per_byte",
      2.0 * ds.tokens_per_unit / math.log(2),
  )
  # Trained once: a second pipeline loads the saved model.
  before = model_path.stat().st_mtime_ns
  again = _create(cfg)
  assert model_path.stat().st_mtime_ns == before
  np.testing.assert_array_equal(
      np.concatenate([b["targets"][b["weights"] > 0] for b in again.eval]), ids
  )
  # A given model file (another data dir: nothing trained there).
  given = _create(
      _cfg(
          **dict(
              cfg.to_dict(),
              data_dir=str(tmp_path / "other"),
              tokenizer_model=str(model_path),
          )
      )
  )
  assert not list((tmp_path / "other").glob("text_files/*/spm*.model"))
  np.testing.assert_array_equal(
      np.concatenate([b["targets"][b["weights"] > 0] for b in given.eval]), ids
  )


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(tokenizer="bpe"), r"data\.tokenizer='bpe'"),
        (dict(tokenizer="sentencepiece"), r'data\.tokenizer=.*"text_files"'),
        (dict(tokenizer_model="x.model"), r"data\.tokenizer_model='x\.model'"),
    ],
)
def test_tokenizer_fields_are_checked_at_start_up(fields, message):
  from experiments import shakespeare  # pylint: disable=g-import-not-at-top
  from routing_jax.training import train  # pylint: disable=g-import-not-at-top

  config = shakespeare.get_config("tiny")
  config.data.update(fields)
  with pytest.raises(ValueError, match=message):
    train.validate_config(config)
