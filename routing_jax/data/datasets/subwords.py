# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Sentencepiece subword tokenizers: trained once, saved, loaded by every host.

Used by PG-19 (`pg19.py`) and by `text_files` with
`data.tokenizer="sentencepiece"`. A trained model is written atomically
(temporary name, then rename), so another host never reads half a file;
paths may be URLs (gs://...).

Ids: 0 = <pad> (also the start token), 1 = <unk>; byte fallback makes every
string encodable and `decode(encode(text)) == text` (identity
normalisation, whitespace kept, "\\n" is its own piece).
"""

import hashlib
import io
import os
from typing import Iterable, Optional

from etils import epath
import numpy as np
import sentencepiece as spm

PAD_ID, UNK_ID = 0, 1


def train(
    lines: Iterable[str], vocab_size: int, path: str, what: str
) -> spm.SentencePieceProcessor:
  """Trains a BPE model on `lines` and saves it at `path`.

  Args:
    lines: the training text, line by line (non-empty lines).
    vocab_size: number of pieces (ids 0..vocab_size-1), at least ~300 (the
      256 byte pieces plus the characters must fit).
    path: the .model file to write (atomically).
    what: the corpus, for error messages.

  Raises:
    ValueError: sentencepiece refused (e.g. too small a vocabulary).
  """
  writer = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=writer,
        vocab_size=vocab_size,
        model_type="bpe",
        pad_id=PAD_ID,
        unk_id=UNK_ID,
        bos_id=-1,
        eos_id=-1,
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        user_defined_symbols=["\n"],
        num_threads=os.cpu_count() or 1,
        minloglevel=2,
    )
  except RuntimeError as e:
    raise ValueError(
        f"training the {what} tokenizer with vocab_size={vocab_size}"
        f" failed: {e}"
    ) from e
  write_atomic(path, writer.getvalue())
  return spm.SentencePieceProcessor(model_proto=writer.getvalue())


def write_atomic(path: str, data: bytes) -> None:
  """Writes `data` under a temporary name, then renames: readers on other
  hosts never see half a file."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / f"{path.name}.tmp{os.getpid()}"
  tmp.write_bytes(data)
  tmp.replace(path)


def load(
    path: str, vocab_size: Optional[int] = None, field: str = ""
) -> spm.SentencePieceProcessor:
  """The model at `path`; with `vocab_size`, checks its piece count.

  Raises:
    FileNotFoundError: no file at `path`.
    ValueError: not a sentencepiece model, or another vocabulary size
      (`field` names the config field that set it).
  """
  try:
    proto = epath.Path(path).read_bytes()
  except FileNotFoundError as e:
    raise FileNotFoundError(f"no sentencepiece model at {path}") from e
  try:
    sp = spm.SentencePieceProcessor(model_proto=proto)
  except RuntimeError as e:
    raise ValueError(f"{path} is not a sentencepiece model: {e}") from e
  if vocab_size is not None and sp.get_piece_size() != vocab_size:
    raise ValueError(
        f"{path} has {sp.get_piece_size()} pieces, expected"
        f" {field or 'vocab_size'}={vocab_size}"
    )
  return sp


def digest(sp: spm.SentencePieceProcessor) -> str:
  """A short name for the model's content (files derived from it)."""
  return hashlib.sha1(sp.serialized_model_proto()).hexdigest()[:10]


def encode(sp: spm.SentencePieceProcessor, text: str) -> np.ndarray:
  """Subword ids of `text`: int32 [num_tokens]."""
  return np.asarray(sp.encode(text), np.int32)


def decode(sp: spm.SentencePieceProcessor, ids) -> str:
  """Text of subword ids (padding id 0 included: it decodes to nothing)."""
  return sp.decode([int(i) for i in np.asarray(ids).reshape(-1)])
