# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Tests for routing_jax.training.checkpointing on 8 fake CPU devices."""

import functools
import json
import logging
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import flax
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import pytest

from helpers import checkpoint_faults as faults

from routing_jax.training import checkpoint_reads
from routing_jax.training import checkpointing
from routing_jax.training import checksums
from routing_jax.training import sharding


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: dict
  opt_state: dict
  kmeans: dict
  rng: jax.Array


def _mesh(data, fsdp, tensor):
  n = data * fsdp * tensor
  return sharding.create_mesh(
      dict(data=data, fsdp=fsdp, tensor=tensor), jax.devices()[:n]
  )


def _specs(kernel_spec):
  """Shardings of the toy state: kernel and kmeans follow kernel_spec."""
  return TrainState(
      step=P(),
      params={"kernel": kernel_spec, "bias": P(), "half": P()},
      opt_state={"mu": kernel_spec},
      kmeans={"centroids": kernel_spec},
      rng=P(),
  )


def _state(mesh, kernel_spec, seed=0):
  rng = np.random.default_rng(seed)
  host = TrainState(
      step=np.int32(seed),
      params={
          "kernel": rng.normal(size=(64, 32)).astype(np.float32),
          "bias": rng.normal(size=(8,)).astype(np.float32),
          "half": rng.normal(size=(4, 4)).astype(jnp.bfloat16),
      },
      opt_state={"mu": rng.normal(size=(64, 32)).astype(np.float32)},
      kmeans={"centroids": rng.normal(size=(64, 32)).astype(np.float32)},
      rng=np.uint32(0),
  )  # Replaced by a typed key below.
  state = jax.tree.map(
      lambda x, s: jax.device_put(x, NamedSharding(mesh, s)),
      host,
      _specs(kernel_spec),
  )
  key = jax.device_put(jax.random.key(seed), NamedSharding(mesh, P()))
  return state.replace(rng=key)


def _target(mesh, kernel_spec, like):
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(
          x.shape, x.dtype, sharding=NamedSharding(mesh, s)
      ),
      like,
      _specs(kernel_spec),
  )


def _assert_bit_equal(a, b):
  def raw(x):
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      x = jax.random.key_data(x)
    return np.atleast_1d(np.asarray(x))

  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(raw(x).view(np.uint8), raw(y).view(np.uint8))


@pytest.fixture(autouse=True)
def _short_retries(monkeypatch):
  """Failed reads are tried again at once (the real delays are seconds)."""
  monkeypatch.setattr(checkpoint_reads, "RETRY_DELAYS_S", (0.01, 0.01))


@pytest.fixture(name="mesh8")
def fixture_mesh8():
  return _mesh(8, 1, 1)


def test_round_trip_is_bit_exact_and_respects_save_every(tmp_path, mesh8):
  spec = P("data", None)
  state = _state(mesh8, spec, seed=3)
  raw_key = jax.random.key_data(state.rng)  # uint32 [2]
  state = state.replace(opt_state={**state.opt_state, "raw_key": raw_key})
  with checkpointing.Checkpointer(
      tmp_path, keep=3, save_every=2, metadata={"config_hash": "abc"}
  ) as ckpt:
    assert ckpt.restore(state) is None  # Fresh directory.
    assert not ckpt.save(1, state, {"epoch": 0, "index": 1})
    assert ckpt.save(2, state, {"epoch": 0, "index": 2})
    assert not ckpt.save(2, state, {"epoch": 0, "index": 2}, force=True)
    ckpt.wait()
    assert ckpt.all_steps() == [2]
  with checkpointing.Checkpointer(tmp_path, keep=3, save_every=2) as ckpt:
    restored, data, step = ckpt.restore(state)  # arrays work as a target
    assert ckpt.read_meta()["config_hash"] == "abc"
    assert ckpt.read_meta(2)["step"] == 2
  assert (step, data) == (2, {"epoch": 0, "index": 2})
  _assert_bit_equal(restored, state)
  assert restored.rng.dtype == state.rng.dtype  # still a typed key
  assert restored.params["half"].dtype == jnp.bfloat16
  assert restored.params["kernel"].sharding == state.params["kernel"].sharding


def test_keep_n_deletes_old_checkpoints(tmp_path, mesh8, monkeypatch):
  state = _state(mesh8, P("data", None))
  monkeypatch.chdir(tmp_path.parent)  # A relative directory works too.
  with checkpointing.Checkpointer(tmp_path.name, keep=2, save_every=1) as ckpt:
    for step in range(1, 5):
      ckpt.save(step, state, {"index": step})
    ckpt.wait()
    assert ckpt.all_steps() == [3, 4] and ckpt.latest_step() == 4
  assert sorted(p.name for p in tmp_path.iterdir()) == ["3", "4"]


@pytest.mark.parametrize("new_mesh", [(2, 2, 2), (2, 1, 2)])
def test_restore_onto_a_different_mesh(tmp_path, mesh8, new_mesh):
  state = _state(mesh8, P("data", None), seed=1)
  with checkpointing.Checkpointer(tmp_path, keep=1, save_every=1) as ckpt:
    ckpt.save(7, state, {"index": 7})
  mesh = _mesh(*new_mesh)  # (2, 1, 2) uses only 4 of the 8 devices.
  target = _target(mesh, P("fsdp", "tensor"), state)
  with checkpointing.Checkpointer(tmp_path, keep=1, save_every=1) as ckpt:
    restored, data, step = ckpt.restore(target)
  assert (step, data) == (7, {"index": 7})
  _assert_bit_equal(restored, state)
  kernel = restored.params["kernel"]
  assert kernel.sharding == target.params["kernel"].sharding
  assert len(kernel.sharding.device_set) == np.prod(new_mesh)
  fsdp, tensor = new_mesh[1], new_mesh[2]
  assert kernel.addressable_shards[0].data.shape == (64 // fsdp, 32 // tensor)


def _array_files(step_dir: pathlib.Path) -> list[pathlib.Path]:
  # OCDBT keeps array data (small chunks inline in b-tree nodes) in `d/`
  # folders: state/d holds the merged tree that restore reads, and
  # state/ocdbt.process_<i>/d what each process wrote.
  files = [
      p
      for p in (step_dir / "state").rglob("*")
      if p.is_file() and p.parent.name == "d"
  ]
  assert files
  return files


def _truncate(step_dir):
  for f in _array_files(step_dir):
    with open(f, "r+b") as fh:
      fh.truncate(f.stat().st_size // 2)


def _delete_array_file(step_dir):
  for f in _array_files(step_dir):
    if f.parent.parent.name == "state":
      f.unlink()


def _delete_item(step_dir):
  for p in sorted((step_dir / "data").iterdir()):
    p.unlink()
  (step_dir / "data").rmdir()


def _corrupt_json(step_dir):
  (step_dir / "state" / "_METADATA").write_text('{"tree_meta')


@pytest.mark.parametrize(
    "damage",
    [
        _truncate,
        _delete_array_file,
        _delete_item,
        _corrupt_json,
        # Orbax reports these with errors classify_error does not know.
        faults.delete_state_metadata,
        faults.corrupt_meta_item,
        pytest.param(
            functools.partial(faults.flip_bytes, merged_tree=True),
            id="flip_bytes",
        ),
    ],
)
def test_damaged_newest_checkpoint_falls_back(tmp_path, mesh8, caplog, damage):
  spec = P("data", None)
  states = {s: _state(mesh8, spec, seed=s) for s in (1, 2, 3)}
  with checkpointing.Checkpointer(tmp_path, keep=3, save_every=1) as ckpt:
    for s, st in states.items():
      ckpt.save(s, st, {"index": s})
  damage(tmp_path / "3")
  with checkpointing.Checkpointer(tmp_path, keep=3, save_every=1) as ckpt:
    with caplog.at_level(logging.WARNING):
      restored, data, step = ckpt.restore(_target(mesh8, spec, states[1]))
    assert (step, data) == (2, {"index": 2})
    _assert_bit_equal(restored, states[2])
    assert any(
        "step 3" in r.getMessage() and "cannot be restored" in r.getMessage()
        for r in caplog.records
    )
    # The damaged step is moved aside, so the resumed run can save step 3,
    # and the log says how to move it back.
    assert ckpt.all_steps() == [1, 2]
    moved = list((tmp_path / checkpointing.CORRUPTED_SUBDIR).iterdir())
    assert [p.name.split("-")[0] for p in moved] == ["3"]
    assert any(
        str(moved[0]) in r.getMessage()
        and f"move it back to {tmp_path / '3'}" in r.getMessage()
        and r.levelno == logging.WARNING
        for r in caplog.records
    )
    assert ckpt.read_meta(2)["step"] == 2  # The meta read with step 2.
    assert ckpt.save(3, restored, {"index": 3})
    ckpt.wait()
    assert ckpt.restore(_target(mesh8, spec, states[1]))[2] == 3


def test_nothing_restorable_raises_and_moves_nothing(tmp_path, mesh8):
  state = _state(mesh8, P("data", None))
  with checkpointing.Checkpointer(tmp_path, keep=2, save_every=1) as ckpt:
    ckpt.save(1, state, {})
    ckpt.save(2, state, {})
  wrong = {
      "other": jax.ShapeDtypeStruct(
          (3,), jnp.float32, sharding=sharding.replicated(mesh8)
      )
  }
  with checkpointing.Checkpointer(tmp_path, keep=2, save_every=1) as ckpt:
    with pytest.raises(
        checkpointing.CheckpointRestoreError,
        match=r"(?s)None of the 2 checkpoints.*step 2.*step 1",
    ):
      ckpt.restore(wrong)
    with pytest.raises(
        checkpointing.CheckpointRestoreError, match="Cannot restore step 5"
    ):
      ckpt.restore(state, step=5)
    assert ckpt.all_steps() == [1, 2]
  assert not (tmp_path / checkpointing.CORRUPTED_SUBDIR).exists()


def _save_steps(directory, mesh, spec, steps=(1, 2, 3)):
  """Saves _state(seed=s) as step s; returns {step: state}."""
  states = {s: _state(mesh, spec, seed=s) for s in steps}
  with checkpointing.Checkpointer(directory, keep=10, save_every=1) as ckpt:
    for s, st in states.items():
      ckpt.save(s, st, {"index": s})
  return states


def test_every_checkpoint_damaged_is_one_line_with_advice(tmp_path, mesh8):
  spec = P("data", None)
  states = _save_steps(tmp_path, mesh8, spec, steps=(1, 2))
  faults.corrupt_meta_item(tmp_path / "2")
  faults.delete_state_metadata(tmp_path / "1")
  with checkpointing.Checkpointer(tmp_path, keep=10, save_every=1) as ckpt:
    with pytest.raises(checkpointing.CheckpointRestoreError) as e:
      ckpt.restore(_target(mesh8, spec, states[1]))
  message = str(e.value)
  assert "\n" not in message and len(message) < 1200
  assert "None of the 2 checkpoints" in message
  assert "JSONDecodeError" in message  # step 2's meta item
  assert f"{tmp_path / 'corrupted'}/" in message and "new workdir" in message
  assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]


def test_a_target_of_other_shapes_fails_at_once_and_moves_nothing(
    tmp_path, mesh8, caplog
):
  """Another config (e.g. a wider model) is told from damage by the saved
  shapes alone: no array is read, nothing is retried or moved."""
  spec = P("data", None)
  states = _save_steps(tmp_path, mesh8, spec, steps=(1, 2))
  target = _target(mesh8, spec, states[1])
  wide = jax.ShapeDtypeStruct(
      (128, 32), jnp.float32, sharding=NamedSharding(mesh8, spec)
  )
  target = target.replace(params={**target.params, "kernel": wide})
  with checkpointing.Checkpointer(tmp_path, keep=10, save_every=1) as ckpt:
    with caplog.at_level(logging.WARNING):
      with pytest.raises(
          checkpointing.CheckpointRestoreError,
          match=r"step 2 .* saved with other shapes .*"
          r"\.params\['kernel'\] \(64, 32\) != \(128, 32\).*new workdir",
      ):
        ckpt.restore(target)
  assert not [r for r in caplog.records if "trying again" in r.getMessage()]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]


def test_save_replaces_an_existing_step_it_did_not_restore(tmp_path, mesh8):
  """A step the restore could not use is never kept over newer work."""
  spec = P("data", None)
  states = _save_steps(tmp_path, mesh8, spec, steps=(1, 2))
  newer = _state(mesh8, spec, seed=7)
  with checkpointing.Checkpointer(tmp_path, keep=10, save_every=1) as ckpt:
    # As after a restore that fell back past step 2 and left it in place.
    restored, _, step = ckpt.restore(states[1], step=1)
    assert not ckpt.save(1, restored, {"index": 1})  # the step it restored
    assert ckpt.save(2, newer, {"index": 2})
    assert not ckpt.save(2, newer, {"index": 2}, force=True)  # saved here
    ckpt.wait()
    got, data, _ = ckpt.restore(states[1], step=2)
  assert (step, data) == (1, {"index": 2})
  _assert_bit_equal(got, newer)
  moved = list((tmp_path / checkpointing.CORRUPTED_SUBDIR).iterdir())
  assert [p.name.split("-")[0] for p in moved] == ["2"]


def _tree(directory):
  """Every path under directory with its size and modification time."""
  return {
      str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
      for p in sorted(pathlib.Path(directory).rglob("*"))
  }


def test_read_only_restore_changes_nothing(tmp_path, mesh8, caplog):
  spec = P("data", None)
  states = _save_steps(tmp_path, mesh8, spec)
  faults.truncate_arrays(tmp_path / "3")
  # A running job's save in progress.
  tmp = tmp_path / "4.orbax-checkpoint-tmp" / "state.orbax-checkpoint-tmp"
  tmp.mkdir(parents=True)
  (tmp / "_METADATA").write_text("{")
  before = _tree(tmp_path)
  with checkpointing.Checkpointer(tmp_path, read_only=True) as ckpt:
    with caplog.at_level(logging.WARNING):
      restored, _, step = ckpt.restore(_target(mesh8, spec, states[1]))
    with pytest.raises(RuntimeError, match="read-only"):
      ckpt.save(5, restored, {}, force=True)
  assert step == 2
  _assert_bit_equal(restored, states[2])
  assert any(
      "left in place (read-only)" in r.getMessage() for r in caplog.records
  )
  assert _tree(tmp_path) == before


@pytest.mark.parametrize(
    "error",
    [
        FileNotFoundError("injected: object not yet listed"),
        ValueError("OUT_OF_RANGE: injected short read"),
        ConnectionResetError("injected: connection reset by peer"),
    ],
)
def test_a_read_error_that_passes_costs_nothing(tmp_path, mesh8, error):
  spec = P("data", None)
  states = _save_steps(tmp_path, mesh8, spec)
  with checkpointing.Checkpointer(tmp_path, keep=10, save_every=1) as ckpt:
    with faults.failing_reads(3, times=2, error=error) as reads:
      restored, _, step = ckpt.restore(_target(mesh8, spec, states[1]))
  assert step == 3 and reads == [3, 3, 3]
  _assert_bit_equal(restored, states[3])
  assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2", "3"]


def test_a_persistent_network_error_stops_and_moves_nothing(tmp_path, mesh8):
  spec = P("data", None)
  states = _save_steps(tmp_path, mesh8, spec)
  with checkpointing.Checkpointer(tmp_path, keep=10, save_every=1) as ckpt:
    with faults.failing_reads(3, times=99) as reads:
      with pytest.raises(
          checkpointing.CheckpointRestoreError,
          match=r"Cannot read checkpoint step 3 .* after 3 tries .*"
          r"ConnectionResetError.*nothing was moved",
      ):
        ckpt.restore(_target(mesh8, spec, states[1]))
  assert reads == [3, 3, 3]  # Step 2 is not an answer to a network error.
  assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2", "3"]


def test_flipped_bits_fail_the_checksum(tmp_path, mesh8, caplog):
  spec = P("data", None)
  states = _save_steps(tmp_path, mesh8, spec, steps=(1, 2))
  # A value changed on disk as bit rot would (the read itself succeeds).
  real = checkpoint_reads.read_step

  def rotten(directory, step, target, partial=False):
    state, data, meta = real(directory, step, target, partial)
    if step == 2:
      mu = np.asarray(state.opt_state["mu"]).copy()
      mu.view(np.uint32)[5, 3] ^= 1 << 30
      state = state.replace(
          opt_state={"mu": jax.device_put(mu, state.opt_state["mu"].sharding)}
      )
    return state, data, meta

  with checkpointing.Checkpointer(tmp_path, keep=10, save_every=1) as ckpt:
    with caplog.at_level(logging.WARNING):
      checkpoint_reads.read_step = rotten
      try:
        restored, _, step = ckpt.restore(_target(mesh8, spec, states[1]))
      finally:
        checkpoint_reads.read_step = real
  assert step == 1
  _assert_bit_equal(restored, states[1])
  assert any(
      "ChecksumError" in r.getMessage() and ".opt_state['mu']" in r.getMessage()
      for r in caplog.records
  )


def test_checksums_ignore_the_layout_and_see_one_bit(mesh8):
  state = _state(mesh8, P("data", None), seed=5)
  other = jax.tree.map(
      lambda x, s: jax.device_put(x, s.sharding),
      state,
      _target(_mesh(2, 2, 1), P("fsdp", "data"), state),
  )
  sums = checksums.state_checksums(state)
  assert checksums.state_checksums(other) == sums
  assert set(sums) >= {".params['kernel']", ".params['half']", ".rng"}
  kernel = np.asarray(state.params["kernel"]).copy()
  kernel.view(np.uint32)[63, 31] ^= 1
  flipped = state.replace(params={**state.params, "kernel": kernel})
  assert checksums.mismatches(sums, checksums.state_checksums(flipped)) == [
      ".params['kernel']"
  ]


def test_leftover_tmp_dir_is_ignored(tmp_path, mesh8):
  spec = P("data", None)
  state = _state(mesh8, spec, seed=4)
  with checkpointing.Checkpointer(tmp_path, keep=3, save_every=1) as ckpt:
    ckpt.save(4, state, {"index": 4})
  # What a process killed during the save of step 5 leaves behind.
  tmp = tmp_path / "5.orbax-checkpoint-tmp" / "state.orbax-checkpoint-tmp"
  tmp.mkdir(parents=True)
  (tmp / "_METADATA").write_text("{")
  with checkpointing.Checkpointer(tmp_path, keep=3, save_every=1) as ckpt:
    assert ckpt.latest_step() == 4
    restored, data, step = ckpt.restore(_target(mesh8, spec, state))
    assert (step, data) == (4, {"index": 4})
    _assert_bit_equal(restored, state)
    assert ckpt.save(5, state, {"index": 5})  # The step name is free again.
    ckpt.wait()
    assert ckpt.all_steps() == [4, 5]


_KILL_MID_SAVE = textwrap.dedent("""
    import os, sys
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax, jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec as P
    from routing_jax.training import checkpointing
    dev = jax.devices()[0]
    def state(v):
      return {"w": jnp.full((2048, 4096), v, jnp.float32)}  # 32 MiB
    ckpt = checkpointing.Checkpointer(sys.argv[1], keep=3, save_every=1)
    ckpt.save(1, state(1.0), {"index": 1}); ckpt.wait()
    ckpt.save(2, state(2.0), {"index": 2})  # async: returns mid-write
    os._exit(0)  # like SIGKILL: no cleanup, no wait
""")


@pytest.mark.slow
def test_process_killed_mid_save_leaves_a_restorable_directory(tmp_path):
  env = dict(os.environ, XLA_FLAGS="")
  subprocess.run(
      [sys.executable, "-c", _KILL_MID_SAVE, str(tmp_path)],
      check=True,
      env=env,
      timeout=120,
  )
  mesh = _mesh(1, 1, 1)
  target = {
      "w": jax.ShapeDtypeStruct(
          (2048, 4096), jnp.float32, sharding=sharding.replicated(mesh)
      )
  }
  with checkpointing.Checkpointer(tmp_path, keep=3, save_every=1) as ckpt:
    restored, data, step = ckpt.restore(target)
  # Either the save of step 2 was committed before the exit, or it is
  # ignored; never a half-written step 2.
  assert step in (1, 2) and data == {"index": step}
  np.testing.assert_array_equal(np.asarray(restored["w"]), float(step))


def test_argument_errors(tmp_path, mesh8):
  with pytest.raises(ValueError, match="keep=0 must be >= 1"):
    checkpointing.Checkpointer(tmp_path, keep=0)
  with pytest.raises(ValueError, match="save_every=1.5 must be an int"):
    checkpointing.Checkpointer(tmp_path, save_every=1.5)
  state = _state(mesh8, P("data", None))
  with checkpointing.Checkpointer(tmp_path, keep=1, save_every=1) as ckpt:
    with pytest.raises(ValueError, match="data_state must be JSON"):
      ckpt.save(1, state, {"index": object()})
    with pytest.raises(ValueError, match="step=-1 must be >= 0"):
      ckpt.save(-1, state, {})
    with pytest.raises(ValueError, match=r"target \['w'\] has no sharding"):
      ckpt.restore({"w": jax.ShapeDtypeStruct((2,), jnp.float32)})


def test_sigterm_sets_flag_and_close_restores_handler():
  calls = []
  previous = signal.signal(signal.SIGTERM, lambda *a: calls.append(a))
  try:
    handler = checkpointing.PreemptionHandler()
    assert not handler.should_stop(0)
    os.kill(os.getpid(), signal.SIGTERM)
    assert handler.signal_received and handler.should_stop(1)
    assert not calls  # Our handler replaced the previous one...
    handler.close()
    os.kill(os.getpid(), signal.SIGTERM)
    assert len(calls) == 1  # ...and close() put it back.
    with checkpointing.PreemptionHandler(
        signals=(signal.SIGTERM, signal.SIGUSR1)
    ) as h2:
      os.kill(os.getpid(), signal.SIGUSR1)
      assert h2.should_stop(0)
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
  finally:
    signal.signal(signal.SIGTERM, previous)


@pytest.mark.slow
def test_processes_agree_on_the_step_when_one_cannot_read_it(tmp_path):
  """2 processes; process 1 alone fails to read step 3 (see restore_worker).

  Both must reach the same verdict, after the same tries. Damage that
  process 1 alone reads (its own truncated shards, or a changed value that
  only the checksums, computed by both, reveal) fails every try and moves
  step 3 aside; a network error on every try stops the restore on both
  with an error and moves nothing; one that passes on retry costs nothing.
  """
  root = pathlib.Path(__file__).resolve().parents[1]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(
      PYTHON=sys.executable,
      MODULE="restore_worker",
      PYTHONPATH=str(root / "tests" / "helpers"),
      DEVICES_PER_PROCESS="1",
      LOG_DIR=str(tmp_path / "logs"),
  )
  result = subprocess.run(
      [
          "bash",
          str(root / "launch" / "local_multiprocess.sh"),
          "2",
          f"--out_dir={tmp_path / 'out'}",
          f"--ckpt_dir={tmp_path / 'ckpt'}",
          "--faults=transient,corrupt,flaky,bitflip",
      ],
      cwd=root,
      env=env,
      capture_output=True,
      text=True,
      timeout=240,
      check=False,
  )
  assert result.returncode == 0, result.stderr
  expected = {  # fault: (restored step, steps left, moved aside)
      "transient": (None, [1, 2, 3], []),
      "corrupt": (2, [1, 2], ["3"]),
      "flaky": (3, [1, 2, 3], []),
      "bitflip": (2, [1, 2], ["3"]),
  }
  for fault, (step, steps_after, corrupted) in expected.items():
    seen = [
        json.loads((tmp_path / "out" / fault / f"proc_{i}.json").read_text())
        for i in range(2)
    ]
    for got in seen:
      assert got["steps_after"] == steps_after, fault
      if step is None:
        assert "Cannot read checkpoint step 3" in got["error"], fault
        assert "nothing was moved" in got["error"], fault
        continue
      assert (got["step"], got["data"], got["step_leaf"]) == (
          step,
          {"index": step},
          step,
      ), fault
      assert got["shard_ok"], fault
      assert got["corrupted"] == corrupted, fault
    assert seen[0]["reads_of_step_3"] == 0  # No fault injected there.
    # Every failure is tried twice more before a verdict.
    assert (
        seen[1]["reads_of_step_3"]
        == {"transient": 3, "corrupt": 3, "flaky": 2, "bitflip": 3}[fault]
    )


def _wrapped(cause):
  """As Orbax wraps a failed chunk read."""
  try:
    raise Exception("Encountered error while reading array index")  # pylint: disable=broad-exception-raised
  except Exception as e:  # pylint: disable=broad-exception-caught
    e.__cause__ = cause
    return e


@pytest.mark.parametrize(
    "error, outcome",
    [
        (ValueError("OUT_OF_RANGE: Error reading byte range"), "corrupt"),
        (_wrapped(ValueError("DATA_LOSS: checksum mismatch")), "corrupt"),
        (FileNotFoundError("state/d/abc"), "corrupt"),
        (KeyError('Item "data" was not found in the checkpoint.'), "corrupt"),
        (ConnectionResetError("reset by peer"), "transient"),
        (_wrapped(ValueError("UNAVAILABLE: try again")), "transient"),
        (PermissionError("denied"), "transient"),
        (ValueError("tree structures differ"), "failed"),
    ],
)
def test_classify_error(error, outcome):
  codes = {
      "corrupt": checkpoint_reads.CORRUPT,
      "transient": checkpoint_reads.TRANSIENT,
      "failed": checkpoint_reads.FAILED,
  }
  assert checkpoint_reads.classify_error(error) == codes[outcome]


def test_set_aside_on_object_storage_copies_before_it_deletes(
    tmp_path, monkeypatch
):
  """A step moved to corrupted/ on a bucket (no rename there): all of it is
  copied first, so a move stopped half-way loses nothing."""
  from etils import epath  # pylint: disable=g-import-not-at-top

  sys.path.insert(0, str(pathlib.Path(__file__).parent / "helpers"))
  import fake_bucket  # pylint: disable=g-import-not-at-top

  fake_bucket.install(tmp_path / "bucket")
  src = epath.Path("fakegs://b/ckpt/6")
  files = {
      "state/_METADATA": "m",
      "state/d/0.0": "x" * 100,
      "meta/m.json": "{}",
  }
  for name, text in files.items():
    (src / name).parent.mkdir(parents=True, exist_ok=True)
    (src / name).write_text(text)
  dest = epath.Path("fakegs://b/ckpt/corrupted/6-1")
  cls = type(src)  # the bucket's own path class
  copy = cls.copy
  copied = []

  def failing_copy(self, target, *args, **kwargs):
    if copied:
      raise OSError("connection reset")
    copied.append(self)
    return copy(self, target, *args, **kwargs)

  monkeypatch.setattr(cls, "copy", failing_copy)
  with pytest.raises(OSError):
    checkpointing.move_tree(src, dest)
  for name, text in files.items():  # the source is whole
    assert (tmp_path / "bucket/b/ckpt/6" / name).read_text() == text
  monkeypatch.setattr(cls, "copy", copy)
  checkpointing.move_tree(src, dest)
  assert not (tmp_path / "bucket/b/ckpt/6").exists()
  for name, text in files.items():
    assert (tmp_path / "bucket/b/ckpt/corrupted/6-1" / name).read_text() == text
