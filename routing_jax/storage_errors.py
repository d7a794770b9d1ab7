# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Which storage errors may pass on a retry, and a retrying data source.

Object storage (gs://, s3://) fails now and then for reasons that have
nothing to do with the bytes: a reset connection, a timeout, a throttled
request. Checkpoint reads (`training/checkpoint_reads.py`) and dataset
reads (`RetryingSource`) retry those a few times before giving up; errors
that say the data itself is missing or damaged are never retried.
"""

import time
from typing import Any, Iterator, Sequence

from absl import logging

# Status words with which tensorstore, array_record and gRPC-based clients
# begin their messages ("UNAVAILABLE: ...") when the storage, not the data,
# is at fault.
TRANSIENT_STATUSES = (
    "UNAVAILABLE",
    "DEADLINE_EXCEEDED",
    "RESOURCE_EXHAUSTED",
    "ABORTED",
    "CANCELLED",
)
# Statuses that mean the stored bytes are missing or damaged.
DAMAGE_STATUSES = ("NOT_FOUND", "OUT_OF_RANGE", "DATA_LOSS")
# OSErrors that a retry cannot fix.
_PERMANENT_OS_ERRORS = (
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)
READ_RETRY_DELAYS_S = (1.0, 4.0, 16.0)


def status_of(error: BaseException) -> str:
  """The leading status word of an error's message ("" if none)."""
  return str(error).split(":", 1)[0].strip()


def causes(error: BaseException) -> Iterator[BaseException]:
  """`error`, then what it was raised from, and so on (libraries wrap the
  storage's error, e.g. Orbax in a plain Exception naming the array)."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def is_transient(error: BaseException) -> bool:
  """Whether `error` (or an error it was raised from) may pass on a retry."""
  for e in causes(error):
    status = status_of(e)
    if isinstance(e, _PERMANENT_OS_ERRORS) or status in DAMAGE_STATUSES:
      return False
    if isinstance(e, OSError) or status in TRANSIENT_STATUSES:
      return True
  return False


class RetryingSource:
  """A random-access data source whose reads are retried on storage errors.

  Wraps what `tfds.data_source` returns (`len(source)`, `source[i]`): a read
  that fails with a transient error (see `is_transient`) is tried again
  after each of `delays` seconds, with a warning; any other error, or the
  last failure, is raised as it came. Picklable, for grain's worker
  processes.
  """

  def __init__(
      self, source: Any, name: str, delays: Sequence[float] | None = None
  ):
    self._source = source
    self._name = name
    self._delays = tuple(READ_RETRY_DELAYS_S if delays is None else delays)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index):
    for attempt, delay in enumerate(self._delays + (None,)):
      try:
        return self._source[index]
      except Exception as e:  # pylint: disable=broad-exception-caught
        if delay is None or not is_transient(e):
          raise
        logging.warning(
            "Reading record %s of %s failed (%s: %s); try %d of %d in %.0f s.",
            index,
            self._name,
            type(e).__name__,
            str(e)[:200],
            attempt + 2,
            len(self._delays) + 1,
            delay,
        )
        time.sleep(delay)

  def __repr__(self) -> str:
    return f"RetryingSource({self._source!r})"
