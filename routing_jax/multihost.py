# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""What processes (hosts) of a multi-process run must agree on.

Every process runs the same program on its own devices; anything one process
decides alone (which batch rows to load, which checkpoint to restore, who
prepares data) must come out the same everywhere, or the collectives of the
next step pair up wrongly and the job hangs or silently diverges.

Batch rows. A batch is split over the mesh axes ("data", "fsdp") and
replicated over "tensor". A process must load exactly the rows its own
devices hold: the union of their batch slices (as in MaxText's multi-host
loading). When a "tensor" group spans processes, those processes load the
same rows; a "1/process_count of the batch" rule would give them different
rows and a wrong global batch.

Failures. A process that raises would leave the others waiting in the next
collective until the runtime's heartbeat or shutdown timeouts (minutes), and
its reason would stay in its own log. `end_job` publishes the reason in the
coordination service's key-value store and ends the process at once;
every process runs `watch_for_failures`, which ends it too, printing whose
failure and why (so host 0's log says it).
"""

import os
import sys
import threading
import time
from typing import Any, Callable

import jax
from jax.experimental import multihost_utils
import numpy as np


def batch_blocks(
    sharding: jax.sharding.Sharding, ndim: int = 2
) -> tuple[int, list[int]]:
  """(number of row blocks of a batch, the blocks this process's devices hold).

  Blocks are the equal slices dimension 0 is split into; their count does
  not depend on the batch size.
  """
  probe = (len(sharding.device_set),) + (1,) * (ndim - 1)

  def starts(indices):
    return sorted({index[0].start or 0 for index in indices.values()})

  every = starts(sharding.devices_indices_map(probe))
  mine = starts(sharding.addressable_devices_indices_map(probe))
  return len(every), [every.index(s) for s in mine]


def process_rows(
    sharding: jax.sharding.Sharding, global_rows: int, ndim: int = 2
) -> np.ndarray:
  """The rows of a global batch this process must load, in ascending order.

  Args:
    sharding: the batch's sharding (e.g. `sharding.data_sharding(mesh)`).
    global_rows: the global batch size.
    ndim: the rank of the batch arrays.

  Raises:
    ValueError: global_rows does not split into the sharding's row blocks.
  """
  blocks, mine = batch_blocks(sharding, ndim)
  if global_rows % blocks:
    raise ValueError(
        f"data.batch_size={global_rows} must be divisible by the {blocks}"
        " batch shards (mesh.data * mesh.fsdp)"
    )
  size = global_rows // blocks
  return np.concatenate(
      [np.arange(b * size, (b + 1) * size) for b in mine]
  ).astype(np.int64)


def allgather(value: Any) -> np.ndarray:
  """Every process's `value` (same shape everywhere), stacked on axis 0."""
  value = np.asarray(value)
  if jax.process_count() == 1:
    return value[None]
  return np.asarray(multihost_utils.process_allgather(value))


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier `name`."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def run_once(fn: Callable[[], Any], name: str) -> None:
  """Runs `fn` on process 0 only; the others wait until it is done.

  For work whose result every process then reads from shared storage (a
  tokenizer, a built dataset): one writer instead of one per host. If `fn`
  fails on process 0 the barrier is still passed, so the others go on and
  find the result missing instead of hanging; process 0 re-raises.
  """
  if jax.process_count() == 1:
    fn()
    return
  error = None
  if jax.process_index() == 0:
    try:
      fn()
    except Exception as e:  # pylint: disable=broad-exception-caught
      error = e
  barrier(f"routing_jax_run_once_{name}")
  if error is not None:
    raise error


def agree(flag: bool) -> bool:
  """Process 0's `flag`, on every process (for decisions from a clock)."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag, np.bool_)))


def check_same(data: bytes, what: str) -> None:
  """Raises if `data` differs between processes (compares a digest)."""
  if jax.process_count() == 1:
    return
  import hashlib  # pylint: disable=g-import-not-at-top

  digest = np.frombuffer(hashlib.sha256(data).digest(), np.uint8)
  digests = allgather(digest)
  if not (digests == digests[0]).all():
    bad = [i for i, d in enumerate(digests) if (d != digests[0]).any()]
    raise RuntimeError(
        f"{what} differs between processes (processes {bad} differ from"
        " process 0)"
    )


def source_digest() -> bytes:
  """A digest of the routing_jax sources this process runs (file names and
  contents), to compare between hosts."""
  import hashlib  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top

  root = pathlib.Path(__file__).resolve().parent
  h = hashlib.sha256()
  for path in sorted(root.rglob("*.py")):
    h.update(str(path.relative_to(root)).encode() + b"\0")
    h.update(path.read_bytes())
  return h.digest()


def check_same_program(config_json: str) -> None:
  """Raises unless every process runs the same code with the same config.

  Hosts with a stale copy of the code or a different flag would otherwise
  compile different programs and meet in mismatched collectives: a hang or
  silent divergence instead of an error.
  """
  check_same(source_digest(), "the routing_jax source code")
  check_same(config_json.encode(), "the config (flags included)")


_FAILED_DIR = "routing_jax/failed/"
_WATCH_POLL_S = 2.0
# Run before a process ends because another one failed (e.g. releasing the
# workdir lock); registered and removed by their owners.
_on_job_end: list[Callable[[], None]] = []


def _client():
  from jax._src import distributed  # pylint: disable=g-import-not-at-top

  return distributed.global_state.client


def is_multi_process() -> bool:
  """Several processes joined through jax.distributed."""
  return jax.process_count() > 1 and _client() is not None


def at_job_end(fn: Callable[[], None]) -> Callable[[], None]:
  """Runs `fn` if this process is ended by another's failure; returns a
  function that unregisters it."""
  _on_job_end.append(fn)
  return lambda: _on_job_end.remove(fn) if fn in _on_job_end else None


def _run_job_end_hooks() -> None:
  for fn in list(_on_job_end):
    try:
      fn()
    except Exception:  # pylint: disable=broad-exception-caught
      pass  # ending anyway


def end_job(reason: str, exit_code: int = 1) -> None:
  """Ends this process of a multi-process job after telling the others why
  (they end within a few seconds, see `watch_for_failures`). No-op with
  one process. Never returns otherwise: `os._exit` skips the runtime's
  shutdown barrier, which would wait for processes blocked in a collective.
  """
  if not is_multi_process():
    return
  me = jax.process_index()
  try:
    _client().key_value_set(f"{_FAILED_DIR}{me}", reason[:4000])
  except Exception:  # pylint: disable=broad-exception-caught
    pass  # the coordinator may be gone; the runtime then ends the others
  sys.stdout.flush()
  sys.stderr.flush()
  if me == 0:  # the key-value store lives here: let the others read it
    time.sleep(2.5 * _WATCH_POLL_S)
  os._exit(exit_code)  # pylint: disable=protected-access


def watch_for_failures(poll_s: float = _WATCH_POLL_S) -> None:
  """Starts a daemon thread that ends this process when another process of
  the job reports a failure (`end_job`), printing which and why."""
  if not is_multi_process():
    return
  client, me = _client(), jax.process_index()

  def watch():
    while True:
      time.sleep(poll_s)
      try:
        failed = client.key_value_dir_get(_FAILED_DIR)
      except Exception:  # pylint: disable=broad-exception-caught
        continue  # the coordinator is gone: the runtime ends this process
      others = sorted(
          (int(key.rsplit("/", 1)[1]), reason)
          for key, reason in failed
          if key.rsplit("/", 1)[1] != str(me)
      )
      if others:
        who, reason = others[0]
        sys.stdout.flush()
        sys.stderr.write(
            f"Process {who} of {jax.process_count()} failed: {reason}\n"
            f"Ending process {me} too (the job cannot go on without it).\n"
        )
        sys.stderr.flush()
        _run_job_end_hooks()
        os._exit(1)  # pylint: disable=protected-access

  threading.Thread(target=watch, name="failure-watch", daemon=True).start()
