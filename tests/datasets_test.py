# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Tests of our TFDS builders, IDX reading, catalog mocks and image helpers.

Everything is offline: archives are generated in tmp_path; catalog datasets
are mocked with tfds.testing.mock_data(policy=USE_CODE).
"""

import gzip
import os
import socket
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments import common
from routing_jax.data import corpus
from routing_jax.data import datasets
from routing_jax.data import images
from routing_jax.data import input_pipeline
from routing_jax.data.datasets import archives
from routing_jax.data.datasets import enwik8
from routing_jax.data.datasets import idx
from routing_jax.data.datasets import opening
from routing_jax.data.datasets import pg19
from routing_jax.data.datasets import text_files
from routing_jax.data.datasets import wikitext103


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
  """Every test here must run offline: any connection attempt fails."""

  def refuse(*args, **kwargs):
    raise AssertionError(f"network access attempted: {args[1:]}")

  monkeypatch.setattr(socket.socket, "connect", refuse)
  monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def _zip(path, members: dict[str, bytes]):
  with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
    for name, data in members.items():
      z.writestr(name, data)
  return archives.ArchiveChecksum.of_file(path)


@pytest.fixture
def enwik8_zip(tmp_path):
  """A 300,000-byte stand-in for enwik8 (5 train chunks of 64 KiB)."""
  manual = tmp_path / "manual"
  manual.mkdir()
  rng = np.random.default_rng(0)
  payload = rng.integers(32, 127, 300_000, dtype=np.uint8).tobytes()
  checksum = _zip(manual / "enwik8.zip", {"enwik8": payload})
  return manual, payload, checksum


def _prepare(name, tmp_path, manual, checksum=None):
  return datasets.prepare(
      name,
      data_dir=str(tmp_path / "tfds"),
      manual_dir=str(manual),
      archive_checksum=checksum,
  )


def _no_dataset_left(data_dir, name):
  """True if a failed build left nothing TFDS would later load."""
  root = data_dir / name
  return not (root / "1.0.0").exists() and (
      not root.exists()
      or not any("incomplete" in p.name for p in root.iterdir())
  )


def test_enwik8_split_bounds_are_the_standard_ones():
  assert enwik8.split_bounds(10**8) == {
      "train": (0, 90_000_000),
      "validation": (90_000_000, 95_000_000),
      "test": (95_000_000, 100_000_000),
  }


def test_enwik8_pins_the_real_archive():
  pinned = archives.pinned_checksum(datasets.Enwik8, enwik8.URL)
  assert pinned.size == 36_445_475
  assert len(pinned.sha256) == 64


def test_enwik8_builds_chunked_streams_in_order(tmp_path, enwik8_zip):
  manual, payload, checksum = enwik8_zip
  _prepare("enwik8", tmp_path, manual, checksum)
  data_dir = str(tmp_path / "tfds")
  for split, (lo, hi) in enwik8.split_bounds(len(payload)).items():
    src = tfds.data_source(
        "enwik8", split=split, data_dir=data_dir, download=False, try_gcs=False
    )
    offsets = [int(src[i]["offset"]) for i in range(len(src))]
    assert offsets == list(range(0, hi - lo, enwik8.CHUNK_BYTES))
    joined = b"".join(src[i]["bytes"].tobytes() for i in range(len(src)))
    assert joined == payload[lo:hi]


def test_checksum_mismatch_fails_clearly_and_leaves_no_dataset(
    tmp_path, enwik8_zip
):
  manual, _, checksum = enwik8_zip
  wrong = archives.ArchiveChecksum(checksum.size, "0" * 64)
  with pytest.raises(
      archives.ArchiveError, match="checksum mismatch for .*enwik8.zip"
  ):
    _prepare("enwik8", tmp_path, manual, wrong)
  assert _no_dataset_left(tmp_path / "tfds", "enwik8")
  # Without an override the pinned checksum of the real file applies.
  with pytest.raises(archives.ArchiveError, match="expected size 36445475"):
    _prepare("enwik8", tmp_path, manual)
  # The pipeline reports "not prepared", not TFDS's TFRECORD message.
  with pytest.raises(FileNotFoundError, match="not prepared"):
    opening.tfds_source("enwik8", "train", str(tmp_path / "tfds"))
  # A later good build works.
  _prepare("enwik8", tmp_path, manual, checksum)
  assert (tmp_path / "tfds" / "enwik8" / "1.0.0").exists()


def test_truncated_zip_names_the_file(tmp_path, enwik8_zip):
  manual, _, _ = enwik8_zip
  path = manual / "enwik8.zip"
  path.write_bytes(path.read_bytes()[:5000])
  checksum = archives.ArchiveChecksum.of_file(path)
  with pytest.raises(
      archives.ArchiveError, match="enwik8.zip is not a readable zip archive"
  ):
    _prepare("enwik8", tmp_path, manual, checksum)
  assert _no_dataset_left(tmp_path / "tfds", "enwik8")


def test_missing_archive_says_where_to_put_it(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  (manual / "unrelated.txt").write_text("x")
  with pytest.raises(
      archives.ArchiveError,
      match=f"enwik8.zip not found in the manual directory {manual}",
  ):
    _prepare("enwik8", tmp_path, manual)
  empty = tmp_path / "empty"
  with pytest.raises(archives.ArchiveError, match="mattmahoney.net"):
    _prepare("enwik8", tmp_path, empty)


def test_empty_archive_member_is_an_error(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  checksum = _zip(manual / "enwik8.zip", {"enwik8": b""})
  with pytest.raises(archives.ArchiveError, match="is empty"):
    _prepare("enwik8", tmp_path, manual, checksum)
  checksum = _zip(manual / "enwik8.zip", {"other": b"abc"})
  with pytest.raises(archives.ArchiveError, match="no member named 'enwik8'"):
    _prepare("enwik8", tmp_path, manual, checksum)


WIKI = {
    "train": " = Cats = \n the cat sat on the mat . \n\n the dog sat . \n",
    "valid": " the zebra sat . \n",
    "test": " a cat <unk> \n",
}


def test_wikitext103_vocab_eos_and_ids(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  checksum = _zip(
      manual / wikitext103.FILENAME,
      {f"wikitext-103/wiki.{k}.tokens": v.encode() for k, v in WIKI.items()},
  )
  _prepare("wikitext103", tmp_path, manual, checksum)
  data_dir = str(tmp_path / "tfds")
  vocab = tfds.builder("wikitext103", data_dir=data_dir).info.metadata["vocab"]
  # Pad first, then by count: the x3 "the"/"sat"/... before singletons.
  assert vocab[0] == "<pad>" and vocab[1] == "<eos>"
  train_words = set(" ".join(WIKI["train"].split("\n")).split()) | {"<eos>"}
  assert set(vocab[1:]) == train_words | {"<unk>"}
  ids = {w: i for i, w in enumerate(vocab)}
  src = tfds.data_source("wikitext103", split="validation", data_dir=data_dir)
  got = src[0]["ids"].tolist()
  # "zebra" is not in train: <unk>; one <eos> per line.
  assert got == [ids["the"], ids["<unk>"], ids["sat"], ids["."], ids["<eos>"]]
  train = tfds.data_source("wikitext103", split="train", data_dir=data_dir)
  assert train[0]["ids"].tolist().count(ids["<eos>"]) == 4  # 4 lines.

  cfg = common.base_config().data
  cfg.update(
      name="wikitext103",
      data_dir=data_dir,
      seq_len=4,
      batch_size=2,
      eval_split="validation",
  )
  ds = input_pipeline.create_datasets(cfg, process_index=0, process_count=1)
  assert ds.vocab_size == len(vocab) and ds.unit == "word"
  batch = next(iter(ds.eval))
  assert batch["targets"][0].tolist() == got[:4]
  assert ds.decode(got) == "the <unk> sat .\n"
  assert ds.encode("the cat\nsat").tolist() == [
      ids["the"],
      ids["cat"],
      ids["<eos>"],
      ids["sat"],
  ]


def _write_files(root, contents):
  root.mkdir(parents=True, exist_ok=True)
  for name, text in contents.items():
    (root / name).write_bytes(text)
  return str(root / "*.txt")


def test_text_files_split_by_whole_file(tmp_path):
  contents = {f"f{i}.txt": f"file {i}\n".encode() * (i + 1) for i in range(6)}
  pattern = _write_files(tmp_path / "txt", contents)
  splits = text_files.assign_splits(text_files.match_files(pattern))
  names = [os.path.basename(p) for s in splits.values() for p in s]
  assert sorted(names) == sorted(contents)  # Disjoint and complete.
  assert all(splits[s] for s in ("train", "validation", "test"))
  builder = datasets.prepare(
      "text_files", data_dir=str(tmp_path / "tfds"), pattern=pattern
  )
  for split, paths in splits.items():
    src = builder.as_data_source(split)
    assert [src[i]["bytes"].tobytes() for i in range(len(src))] == [
        contents[os.path.basename(p)] for p in paths
    ]
  # Same files -> same fingerprint; changed files -> a new dataset.
  data_dir = str(tmp_path / "tfds")
  again = text_files.TextFiles(pattern=pattern, data_dir=data_dir)
  assert again.builder_config.name == builder.builder_config.name
  (tmp_path / "txt" / "f0.txt").write_bytes(b"changed, longer text\n")
  changed = text_files.TextFiles(pattern=pattern, data_dir=data_dir)
  assert changed.builder_config.name != builder.builder_config.name


def test_text_files_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="matched no files"):
    text_files.match_files(str(tmp_path / "nothing" / "*.txt"))
  two = _write_files(tmp_path / "two", {"a.txt": b"a", "b.txt": b"b"})
  with pytest.raises(ValueError, match="at least 3 files"):
    datasets.prepare("text_files", data_dir=str(tmp_path / "t1"), pattern=two)
  bad = _write_files(
      tmp_path / "bad",
      {"a.txt": b"a", "b.txt": b"b", "c.txt": b"", "d.txt": b"d"},
  )
  with pytest.raises(ValueError, match="c.txt is empty"):
    datasets.prepare("text_files", data_dir=str(tmp_path / "t2"), pattern=bad)
  assert _no_dataset_left(tmp_path / "t2", "text_files")


def _idx_bytes(arr: np.ndarray) -> bytes:
  header = bytes([0, 0, 0x08, arr.ndim])
  header += b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
  return header + arr.astype(np.uint8).tobytes()


def write_idx_dir(root, n_train=6, n_test=3, hw=(4, 5)):
  """Tiny Fashion-MNIST-format files; returns {split: images}."""
  root.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(1)
  out = {}
  for split, n in (("train", n_train), ("test", n_test)):
    imgs = rng.integers(0, 256, (n,) + hw, dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    img_name, label_name = idx.FILES[split]
    (root / (img_name + ".gz")).write_bytes(gzip.compress(_idx_bytes(imgs)))
    (root / (label_name + ".gz")).write_bytes(gzip.compress(_idx_bytes(labels)))
    out[split] = imgs
  return out


def test_idx_reads_and_validates(tmp_path):
  imgs = write_idx_dir(tmp_path / "fm")
  got, labels = idx.load_split(tmp_path / "fm", "train")
  np.testing.assert_array_equal(got, imgs["train"])
  assert labels.shape == (6,)
  bad = tmp_path / "bad.idx"
  bad.write_bytes(b"\x01\x02\x08\x01" + (3).to_bytes(4, "big") + b"abc")
  with pytest.raises(idx.IdxFormatError, match="bad.idx is not an IDX file"):
    idx.read_idx(bad)
  bad.write_bytes(_idx_bytes(np.zeros((3, 2, 2)))[:-1])
  with pytest.raises(idx.IdxFormatError, match=r"shape \(3, 2, 2\).*truncated"):
    idx.read_idx(bad)
  with pytest.raises(idx.IdxFormatError, match="expected 3 dimensions"):
    idx.read_idx(tmp_path / "fm" / "train-labels-idx1-ubyte.gz", ndim=3)
  with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte.gz"):
    idx.load_split(tmp_path, "test")
  with pytest.raises(ValueError, match="split must be one of"):
    idx.load_split(tmp_path / "fm", "validation")


def _image_cfg(name, seq_len):
  cfg = common.base_config().data
  cfg.update(name=name, seq_len=seq_len, batch_size=2, eval_split="test")
  return cfg


def test_cifar10_mock_gives_raster_subpixel_sequences():
  with tfds.testing.mock_data(
      num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE
  ):
    ds = input_pipeline.create_datasets(
        _image_cfg("cifar10", 3072), process_index=0, process_count=1
    )
    test_images = tfds.data_source("cifar10", split="test")
    batches = list(ds.eval)
    with pytest.raises(ValueError, match="H\\*W\\*C = 3072"):
      input_pipeline.create_datasets(
          _image_cfg("cifar10", 1024), process_index=0, process_count=1
      )
  assert ds.unit == "subpixel" and ds.image_shape == (32, 32, 3)
  assert len(batches) == 2  # 3 images, batch 2: the last row is padding.
  for i in range(3):
    row = batches[i // 2]["targets"][i % 2]
    np.testing.assert_array_equal(
        row, images.image_to_sequence(test_images[i]["image"])
    )
  assert batches[1]["weights"][1].sum() == 0
  assert batches[0]["inputs"][0, 0] == 0


def test_imagenet64_mock_sequence_length():
  cfg = _image_cfg("imagenet_resized/64x64", 12288)
  cfg.eval_split = "validation"
  with tfds.testing.mock_data(
      num_examples=1, policy=tfds.testing.MockPolicy.USE_CODE
  ):
    ds = input_pipeline.create_datasets(cfg, process_index=0, process_count=1)
    batch = next(ds.train)
  assert batch["targets"].shape == (2, 12288)
  assert ds.image_shape == (64, 64, 3)
  assert batch["targets"].max() <= 255 and batch["weights"].min() == 1


def _pg19_books(split):
  names = corpus.plays("train")[:4] if split == "train" else ["macbeth"]
  return [
      {"book_text": corpus.load_play(n).decode(), "book_id": i}
      for i, n in enumerate(names)
  ]


def test_pg19_mock_tokenizer_and_word_factor(tmp_path):
  cfg = common.base_config().data
  cfg.update(
      name="pg19",
      seq_len=512,
      batch_size=2,
      data_dir=str(tmp_path),
      tokenizer_vocab_size=400,
  )

  def as_data_source(self, split, **kwargs):
    del self, kwargs
    return _pg19_books(split)

  with tfds.testing.mock_data(
      policy=tfds.testing.MockPolicy.USE_CODE, as_data_source_fn=as_data_source
  ):
    ds = input_pipeline.create_datasets(cfg, process_index=0, process_count=1)
    path = pg19.tokenizer_path(str(tmp_path), 400)
    mtime = os.path.getmtime(path)
    again = input_pipeline.create_datasets(
        cfg, process_index=0, process_count=1
    )
    assert os.path.getmtime(path) == mtime  # Loaded, not retrained.
    eval_batches = list(ds.eval)
  text = corpus.load_play("macbeth").decode()
  ids = ds.encode(text)
  assert ds.decode(ids) == text  # Lossless.
  assert ds.vocab_size == 400 and ids.max() < 400 and ids.min() > 0
  assert ds.tokens_per_unit == pytest.approx(len(ids) / len(text.split()))
  assert again.tokens_per_unit == ds.tokens_per_unit
  # The eval split is one book: its sequences are the book's ids in order.
  got = np.concatenate([b["targets"][b["weights"] > 0] for b in eval_batches])
  np.testing.assert_array_equal(got, ids)
  assert pg19.PAPER_TOKENS_PER_WORD == 1.248


def test_pg19_is_prepared_once_and_other_processes_only_read(
    tmp_path, monkeypatch
):
  """Two processes, simulated: process 1 meets process 0 at the barrier.

  Process 0 trains the tokenizer and counts each split once; process 1
  waits and reads its files. Later opens (any host, any run) only read.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from routing_jax import multihost  # pylint: disable=g-import-not-at-top

  cfg = common.base_config().data
  cfg.update(
      name="pg19",
      seq_len=512,
      batch_size=2,
      data_dir=str(tmp_path),
      tokenizer_vocab_size=400,
  )
  process = {"index": 1}
  calls = []  # (process index, what it computed)
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(jax, "process_index", lambda: process["index"])
  for fn in ("train_tokenizer", "count_split"):
    real = getattr(pg19, fn)

    def recorded(*args, real=real, fn=fn, **kwargs):
      calls.append((process["index"], fn))
      return real(*args, **kwargs)

    monkeypatch.setattr(pg19, fn, recorded)

  def barrier(name):
    del name
    if process["index"] == 1:  # Meanwhile process 0 opens the dataset.
      process["index"] = 0
      input_pipeline.create_datasets(cfg, process_index=0, process_count=2)
      process["index"] = 1

  monkeypatch.setattr(multihost, "barrier", barrier)
  # The processes share the data dir, so they agree on its readiness.
  monkeypatch.setattr(
      multihost, "allgather", lambda x: np.stack([np.asarray(x)] * 2)
  )

  def as_data_source(self, split, **kwargs):
    del self, kwargs
    return _pg19_books(split)

  with tfds.testing.mock_data(
      policy=tfds.testing.MockPolicy.USE_CODE, as_data_source_fn=as_data_source
  ):
    ds = input_pipeline.create_datasets(cfg, process_index=1, process_count=2)
    assert sorted(calls) == [
        (0, "count_split"),
        (0, "count_split"),
        (0, "train_tokenizer"),
    ]
    calls.clear()
    again = input_pipeline.create_datasets(
        cfg, process_index=1, process_count=2
    )
    assert not calls  # Prepared: nothing is tokenized again.
    batch = next(again.train)
  ids = ds.encode(corpus.load_play("macbeth").decode())
  assert (
      ds.tokens_per_unit
      == again.tokens_per_unit
      == pytest.approx(
          len(ids) / len(corpus.load_play("macbeth").decode().split())
      )
  )
  assert batch["targets"].shape == (1, 512)  # Process 1's row of 2.


def test_image_sequence_raster_order_and_inverse():
  img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
  seq = images.image_to_sequence(img)
  assert seq.dtype == np.int32 and seq.shape == (18,)
  y, x, c = 1, 2, 1
  assert seq[(y * 3 + x) * 3 + c] == img[y, x, c]
  np.testing.assert_array_equal(images.sequence_to_image(seq, (2, 3, 3)), img)
  with pytest.raises(ValueError, match="does not match shape"):
    images.sequence_to_image(seq, (2, 2, 3))
  with pytest.raises(ValueError, match="0..255"):
    images.image_to_sequence(np.full((2, 2, 1), 300))


@pytest.mark.parametrize("channels", [1, 3])
def test_png_grid_decodes_to_the_same_pixels(tmp_path, channels):
  from PIL import Image  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  imgs = rng.integers(0, 256, (5, 4, 6, channels), dtype=np.uint8)
  grid = images.save_png_grid(imgs, tmp_path / "g.png", ncols=3, padding=1)
  assert grid.shape == (2 * 5 + 1, 3 * 7 + 1, channels)
  decoded = np.asarray(Image.open(tmp_path / "g.png"))
  np.testing.assert_array_equal(decoded.reshape(grid.shape), grid)
  # Image 4 (row 1, column 1) sits at its padded slot.
  np.testing.assert_array_equal(grid[6:10, 8:14], imgs[4])


def test_hosts_that_disagree_on_readiness_still_meet_at_the_barrier(
    monkeypatch,
):
  """Readiness is decided together: a host that finds the data (its own
  disk) while another does not still joins the barrier the other waits in,
  instead of returning early and leaving it hanging."""
  from routing_jax import multihost  # pylint: disable=g-import-not-at-top
  from routing_jax.data.datasets import opening  # pylint: disable=g-import-not-at-top

  # Process 0 has the data, process 1 (a host-local disk) does not.
  everyone = [True, False]
  barriers, prepared = [], []

  def as_process(index):
    ready = {"now": everyone[index]}

    def run_once(fn, name):
      if index == 0:
        fn()
      barriers.append((index, name))

    monkeypatch.setattr(multihost, "allgather", lambda x: np.asarray(everyone))
    monkeypatch.setattr(multihost, "run_once", run_once)

    def prepare():
      prepared.append(index)
      ready["now"] = True

    opening._prepare_once(lambda: ready["now"], prepare, "x")  # pylint: disable=protected-access

  as_process(0)
  as_process(1)
  assert barriers == [(0, "x"), (1, "x")]  # both took part
  assert prepared == [1]  # only the host without the data built its copy
