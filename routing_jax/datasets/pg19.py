"""PG-19 with a sentencepiece subword vocabulary, and word-level units.

The paper models PG-19 with a subword vocabulary (T2T SubwordTextEncoder,
~2^15 target) and reports word-level perplexity. We train a sentencepiece BPE
model on a sample of the train split instead, once, and save it next to the
TFDS data (`<data_dir>/pg19_spm<V>.model`); every later run (and every host)
loads that file, so ids never change under a checkpoint.

Ids: 0 = <pad> (also the start token), 1 = <unk>; byte fallback makes every
string encodable and `decode(encode(text)) == text` (identity
normalisation, whitespace kept, "\\n" is its own piece).

Word-level perplexity: with L nats per subword token, the word-level
perplexity is exp(L * T / W), T subword tokens and W words (whitespace
separated) in the evaluation text; `tokens_per_word` computes T / W. The
reference's PG-19 problem file fixes this factor at 1.248 for its own
vocabulary (`PAPER_TOKENS_PER_WORD`); ours differs and must be measured on
the split being reported.
"""

import io
import os

import numpy as np
import sentencepiece as spm

PAPER_TOKENS_PER_WORD = 1.248
PAD_ID, UNK_ID = 0, 1


def default_data_dir(data_dir: str | None) -> str:
  """The TFDS data dir: `data_dir`, else $TFDS_DATA_DIR, else the default."""
  if data_dir:
    return os.path.expanduser(data_dir)
  return os.path.expanduser(
      os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
  )


def tokenizer_path(data_dir: str | None, vocab_size: int) -> str:
  """Where the tokenizer for `vocab_size` lives."""
  return os.path.join(default_data_dir(data_dir), f"pg19_spm{vocab_size}.model")


def book_text(example) -> str:
  """The text of a PG-19 example (TFDS returns str or bytes)."""
  text = example["book_text"]
  if isinstance(text, bytes):
    text = text.decode("utf-8")
  return str(text)


def sample_lines(source, *, max_books: int, max_bytes: int):
  """Yields non-empty lines from up to `max_books` books spread evenly over
  `source`, stopping after about `max_bytes` bytes."""
  n = len(source)
  if n == 0:
    raise ValueError("cannot train a tokenizer: the PG-19 split is empty")
  picks = np.unique(np.linspace(0, n - 1, min(n, max_books)).astype(int))
  seen = 0
  for i in picks:
    for line in book_text(source[int(i)]).split("\n"):
      if line.strip():
        seen += len(line)
        yield line
      if seen >= max_bytes:
        return


def train_tokenizer(
    source,
    vocab_size: int,
    path: str,
    *,
    max_books: int = 500,
    max_bytes: int = 200 << 20,
) -> spm.SentencePieceProcessor:
  """Trains a BPE sentencepiece model on a sample of `source`; saves it.

  Args:
    source: the PG-19 train split (random access, `book_text` feature).
    vocab_size: number of pieces (ids 0..vocab_size-1), at least ~400 (the
      256 byte pieces plus the characters must fit).
    path: the .model file to write (atomically).
    max_books: books sampled, spread evenly over the split.
    max_bytes: stop reading text after this many bytes.

  Returns:
    The trained processor.
  """
  writer = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=sample_lines(
            source, max_books=max_books, max_bytes=max_bytes
        ),
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
        f"training the PG-19 tokenizer with vocab_size={vocab_size} failed:"
        f" {e}"
    ) from e
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(writer.getvalue())
  os.replace(tmp, path)  # Atomic: another host never reads half a model.
  return spm.SentencePieceProcessor(model_proto=writer.getvalue())


def load_or_train_tokenizer(
    data_dir: str | None, vocab_size: int, train_source_fn, **train_kwargs
) -> spm.SentencePieceProcessor:
  """Loads `tokenizer_path(data_dir, vocab_size)`, training it if absent.

  Args:
    data_dir: TFDS data dir ("" or None: the default).
    vocab_size: the tokenizer's vocabulary size (data.tokenizer_vocab_size).
    train_source_fn: () -> the train split, called only when training.
    **train_kwargs: passed to `train_tokenizer`.
  """
  path = tokenizer_path(data_dir, vocab_size)
  if os.path.exists(path):
    sp = spm.SentencePieceProcessor(model_file=path)
    if sp.get_piece_size() != vocab_size:
      raise ValueError(
          f"{path} has {sp.get_piece_size()} pieces, expected"
          f" data.tokenizer_vocab_size={vocab_size}"
      )
    return sp
  return train_tokenizer(train_source_fn(), vocab_size, path, **train_kwargs)


def encode(sp: spm.SentencePieceProcessor, text: str) -> np.ndarray:
  """Subword ids of `text`: int32 [num_tokens]."""
  return np.asarray(sp.encode(text), np.int32)


def tokens_per_word(source, sp: spm.SentencePieceProcessor) -> float:
  """T / W over all books of `source`: subword tokens per word.

  Multiply a per-token loss (nats) by this to get the per-word loss, whose
  exp is the word-level perplexity PG-19 results are reported in.
  """
  tokens = words = 0
  for i in range(len(source)):
    text = book_text(source[i])
    tokens += len(sp.encode(text))
    words += len(text.split())
  if words == 0:
    raise ValueError("tokens_per_word: the split has no words")
  return tokens / words
