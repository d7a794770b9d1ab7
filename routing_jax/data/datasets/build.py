# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""Prepares a dataset for training: the one step that may read archives.

Usage:
  python -m routing_jax.data.datasets.build --name=enwik8 \
      --data_dir=~/tensorflow_datasets --manual_dir=~/downloads
  python -m routing_jax.data.datasets.build --name=text_files \
      --pattern='/data/my_corpus/*.txt' --data_dir=/tmp/tfds
  python -m routing_jax.data.datasets.build --name=pg19 \
      --tokenizer_vocab_size=32768

--allow_download lets enwik8/wikitext103 fetch their archive (verified
against checksums.tsv) when it is not in --manual_dir. For pg19 this also
trains and saves the sentencepiece tokenizer, so that training hosts only
load it.
"""

import os
import types

from absl import flags
import tensorflow_datasets as tfds

from routing_jax import cli
from routing_jax import errors
from routing_jax.data import datasets
from routing_jax.data.datasets import opening
from routing_jax.data.datasets import pg19

_NAME = flags.DEFINE_string("name", None, "Dataset name.", required=True)
_DATA_DIR = flags.DEFINE_string("data_dir", "", "TFDS data dir.")
_MANUAL_DIR = flags.DEFINE_string(
    "manual_dir", "", "Directory holding downloaded archives."
)
_PATTERN = flags.DEFINE_string("pattern", "", "Glob, for --name=text_files.")
_ALLOW_DOWNLOAD = flags.DEFINE_bool(
    "allow_download", False, "Download missing archives (our builders)."
)
_VOCAB = flags.DEFINE_integer(
    "tokenizer_vocab_size", 32768, "pg19: sentencepiece vocabulary size."
)


def main(argv):
  del argv
  data_dir = os.path.expanduser(_DATA_DIR.value) or None
  manual_dir = os.path.expanduser(_MANUAL_DIR.value) or None
  try:
    builder = datasets.prepare(
        _NAME.value,
        data_dir=data_dir,
        manual_dir=manual_dir,
        allow_download=_ALLOW_DOWNLOAD.value,
        pattern=_PATTERN.value or None,
    )
  except tfds.core.registered.DatasetNotFoundError as e:
    raise errors.UserInputError(
        f"--name={_NAME.value}: no such dataset; use one of"
        f" {', '.join([*datasets.OUR_BUILDERS, 'text_files'])} or a TFDS"
        f" catalog name (e.g. {', '.join(datasets.CATALOG)})"
    ) from e
  except datasets.ArchiveError as e:
    raise errors.DataError(" ".join(str(e).split())) from e
  print(f"prepared {builder.info.full_name} in {builder.data_dir}")
  for split, info in builder.info.splits.items():
    print(f"  {split}: {info.num_examples} records")
  if _NAME.value == "pg19":
    sp = pg19.load_or_train_tokenizer(
        data_dir,
        _VOCAB.value,
        lambda: tfds.data_source("pg19", split="train", data_dir=data_dir),
    )
    print(
        f"tokenizer: {pg19.tokenizer_path(data_dir, _VOCAB.value)}"
        f" ({sp.get_piece_size()} pieces)"
    )
    # Tokenize every book once now and cache the lengths, so training hosts
    # start without this pass.
    cfg = types.SimpleNamespace(
        name="pg19", data_dir=data_dir or "", tokenizer_vocab_size=_VOCAB.value
    )
    for split in builder.info.splits:
      docs, extra = opening.open_split(cfg, split)
      print(
          f"  {split}: {int(docs.lengths().sum()):,} subword tokens"
          + (
              f", {extra['tokens_per_unit']:.4f} tokens per"
              f" {'byte' if extra['unit'] == 'subword_byte' else 'word'}"
              if "tokens_per_unit" in extra
              else ""
          )
      )


if __name__ == "__main__":
  cli.run(main)
