# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Opening one split of a prepared dataset as `sources.Documents`.

Reads go through `tfds.data_source(..., download=False)` on array_record
data (no TensorFlow, no network); a dataset that is not prepared gives a
FileNotFoundError saying how to prepare it. Two datasets are prepared on
first use if needed: `text_files` (built from local files) and PG-19's
tokenizer and token counts. With several processes, process 0 prepares and
the others wait, then read its result (see `_prepare_once`).
"""

import os

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from routing_jax import storage_errors

# Imported for their side effect too: they register our TFDS builders.
from routing_jax.data.datasets import enwik8  # pylint: disable=unused-import
from routing_jax.data.datasets import idx
from routing_jax.data.datasets import pg19
from routing_jax.data.datasets import sources
from routing_jax.data.datasets import subwords
from routing_jax.data.datasets import text_files
from routing_jax.data.datasets import wikitext103

IMAGE_DATASETS = ("cifar10", "imagenet_resized/64x64")


def data_dir_of(cfg) -> str | None:
  """The TFDS data dir named by the config ("" -> TFDS's default)."""
  return os.path.expanduser(cfg.data_dir) if cfg.data_dir else None


def tfds_source(name: str, split: str, data_dir: str | None):
  """`tfds.data_source` of a prepared array_record dataset, offline, its
  reads retried on transient storage errors.

  Raises:
    FileNotFoundError: the dataset is not prepared in `data_dir`.
  """
  try:
    source = tfds.data_source(
        name, split=split, data_dir=data_dir, download=False, try_gcs=False
    )
  except (
      NotImplementedError,
      FileNotFoundError,
      AssertionError,
      tfds.core.registered.DatasetNotFoundError,
  ) as e:
    # TFDS reports an unprepared dataset as "Random access data source for
    # file format TFRECORD is not supported"; say what is really wrong.
    raise FileNotFoundError(
        f"dataset {name!r} (split {split!r}) is not prepared as array_record"
        f" in data_dir {data_dir or '(the TFDS default)'}. Prepare it first:"
        f" python -m routing_jax.data.datasets.build --name={name}"
        f" --data_dir=... [--manual_dir=...]  ({type(e).__name__}: {e})"
    ) from e
  # Object storage drops a read now and then: those are retried.
  return storage_errors.RetryingSource(source, f"{name}/{split}")


def _byte_extra() -> dict:
  return dict(
      unit="byte", decode=sources.decode_bytes, encode=sources.encode_bytes
  )


def _wikitext_codec(vocab: list[str]):
  """(decode, encode) for word ids; `<eos>` <-> end of line."""
  word_ids = {w: i for i, w in enumerate(vocab)}
  unk = word_ids[wikitext103.UNK]

  def decode(ids) -> str:
    out = []
    for i in np.asarray(ids).tolist():
      if not 0 < i < len(vocab):  # Padding.
        continue
      if vocab[i] == wikitext103.EOS:
        out.append("\n")
      else:
        out.append((" " if out and out[-1] != "\n" else "") + vocab[i])
    return "".join(out)

  def encode(text: str) -> np.ndarray:
    lines = text.split("\n")
    ids = []
    for i, line in enumerate(lines):
      words = wikitext103.line_tokens(line)
      if i == len(lines) - 1:  # An unfinished last line has no <eos> yet.
        words = words[:-1]
      ids.extend(word_ids.get(w, unk) for w in words)
    return np.asarray(ids, np.int32)

  return decode, encode


def _prepare_once(is_ready, prepare, name: str) -> None:
  """Runs `prepare` unless `is_ready()` on every process: on process 0 only,
  the others wait.

  A process that still finds nothing afterwards does not share process 0's
  data dir (e.g. a host-local disk) and prepares its own copy; it also
  meets process 0's error, if that failed, as its own.
  """
  from routing_jax import multihost  # pylint: disable=g-import-not-at-top

  # Decided together: a process that returned early on its own verdict
  # would skip the barrier the others wait in (hosts with local disks can
  # disagree), and the job would hang.
  if multihost.allgather(bool(is_ready())).all():
    return
  multihost.run_once(lambda: None if is_ready() else prepare(), name)
  if not is_ready():
    try:
      prepare()
    except OSError:
      # Processes sharing a host-local dir may build at once: the first
      # rename wins and the others fail to rename onto it (same data).
      if not is_ready():
        raise


def _open_pg19(cfg, split: str, data_dir: str | None):
  source = tfds_source("pg19", split, data_dir)
  vocab_size = cfg.tokenizer_vocab_size
  _prepare_once(
      lambda: pg19.is_prepared(data_dir, vocab_size, split),
      lambda: pg19.prepare_split(
          data_dir,
          vocab_size,
          split,
          source,
          lambda: source
          if split == "train"
          else tfds_source("pg19", "train", data_dir),
      ),
      f"pg19_{split}",
  )
  sp, lengths, tokens_per_word = pg19.load_split(data_dir, vocab_size, split)
  docs = sources.TokenizedDocuments(
      source,
      pg19.book_text,
      lambda text: pg19.encode(sp, text),
      vocab_size,
      lengths=lengths,
  )
  extra = dict(
      unit="subword",
      decode=lambda ids: sp.decode([int(i) for i in np.asarray(ids)]),
      encode=lambda t: pg19.encode(sp, t),
  )
  if split != "train":
    extra["tokens_per_unit"] = tokens_per_word
  return docs, extra


def _text_files_subwords(cfg, builder, split: str, docs):
  """`text_files` as sentencepiece subwords (data.tokenizer=
  "sentencepiece"), still reported per byte.

  The model is `data.tokenizer_model` if given, else one trained once on
  the train split (process 0; the others wait) and saved next to the
  dataset, named by its vocabulary size. A split's bits per byte are its
  nats per token times tokens per byte (its UTF-8 bytes), so they compare
  with byte-level runs on the same files.
  """
  if cfg.tokenizer_model:
    sp = subwords.load(cfg.tokenizer_model)
  else:
    vocab_size = cfg.tokenizer_vocab_size
    path = os.path.join(
        os.fspath(epath.Path(builder().data_dir).parent),
        f"spm{vocab_size}.model",
    )

    def lines():
      train = builder().as_data_source("train")
      for i in range(len(train)):
        text = bytes(train[i]["bytes"]).decode("utf-8", errors="replace")
        yield from (line for line in text.split("\n") if line.strip())

    _prepare_once(
        lambda: epath.Path(path).exists(),
        lambda: subwords.train(lines(), vocab_size, path, "text_files"),
        "text_files_tokenizer",
    )
    sp = subwords.load(path, vocab_size, "data.tokenizer_vocab_size")
  texts = [bytes(d).decode("utf-8", errors="replace") for d in docs]
  ids = [subwords.encode(sp, t) for t in texts]
  extra = dict(
      unit="subword_byte",
      decode=lambda i: subwords.decode(sp, i),
      encode=lambda t: subwords.encode(sp, t),
  )
  if split != "train":
    num_bytes = sum(len(t.encode("utf-8")) for t in texts)
    extra["tokens_per_unit"] = sum(len(i) for i in ids) / max(num_bytes, 1)
  return sources.ArrayDocuments(ids, sp.get_piece_size()), extra


def open_split(cfg, split: str) -> tuple[sources.Documents, dict]:
  """Opens `split` of dataset `cfg.name`.

  Args:
    cfg: the data config (name, data_dir, manual_dir, text_files,
      tokenizer_vocab_size, ...).
    split: the split to open.

  Returns:
    (documents, dict of `input_pipeline.Datasets` fields: unit, decode,
    encode, image_shape, tokens_per_unit as they apply).
  """
  name = cfg.name
  data_dir = data_dir_of(cfg)
  if name == "enwik8":
    source = tfds_source("enwik8", split, data_dir)
    return sources.StreamDocuments(source, "bytes", 256), _byte_extra()
  if name == "wikitext103":
    source = tfds_source("wikitext103", split, data_dir)
    vocab = list(tfds.builder(name, data_dir=data_dir).info.metadata["vocab"])
    decode, encode = _wikitext_codec(vocab)
    docs = sources.StreamDocuments(source, "ids", len(vocab))
    return docs, dict(unit="word", decode=decode, encode=encode)
  if name == "text_files":

    def builder():
      return text_files.TextFiles(
          pattern=cfg.text_files, data_dir=data_dir, file_format="array_record"
      )

    _prepare_once(
        lambda: builder().is_prepared(),
        lambda: builder().download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False)
        ),
        "text_files",
    )
    # A new builder reads the dataset info that the build wrote.
    source = storage_errors.RetryingSource(
        builder().as_data_source(split), f"text_files/{split}"
    )
    docs = [source[i]["bytes"] for i in range(len(source))]
    if cfg.get("tokenizer", "bytes") == "bytes":
      return sources.ArrayDocuments(docs, 256), _byte_extra()
    return _text_files_subwords(cfg, builder, split, docs)
  if name == "pg19":
    return _open_pg19(cfg, split, data_dir)
  if name in IMAGE_DATASETS:
    docs = sources.ImageDocuments(tfds_source(name, split, data_dir))
    return docs, dict(unit="subpixel", image_shape=docs.image_shape)
  if name == "fashion_mnist":
    if not cfg.manual_dir:
      raise ValueError(
          "data.manual_dir must name the directory holding the Fashion-MNIST"
          " IDX files (train-images-idx3-ubyte.gz, ...) for"
          " data.name='fashion_mnist'"
      )
    imgs, _ = idx.load_split(os.path.expanduser(cfg.manual_dir), split)
    n, h, w = imgs.shape
    docs = sources.FixedLengthDocuments(imgs.reshape(n, h * w), 256)
    return docs, dict(unit="subpixel", image_shape=(h, w, 1))
  raise ValueError(f"data.name {name!r} has no opener")
