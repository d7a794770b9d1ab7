# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Tests for resuming training: exact resume, SIGKILL, SIGTERM, bad states.

Every run uses the tiny Shakespeare config with a schedule that does not
depend on train.steps (rsqrt), so a run of N steps followed by a run to
N + M takes exactly the steps of a run straight to N + M. All runs, in this
process and in `python -m routing_jax.main` subprocesses, see the same 8
fake CPU devices, so their results must be bitwise identical. A module
fixture trains the straight reference run once.
"""

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from experiments import shakespeare
from helpers import checkpoint_faults as faults
from routing_jax import errors
from routing_jax.training import checkpoint_reads
from routing_jax.training import checkpointing
from routing_jax.training import train
from routing_jax.training import train_loop

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS = 16
EVERY = 8  # checkpoint_every
# Overrides of experiments/shakespeare.py:tiny, as "section.field": value;
# the same dict becomes --config.section.field=value flags for main.
OVERRIDES = {
    "train.schedule": "rsqrt",
    "train.warmup_steps": 2,
    "train.steps": STEPS,
    "train.checkpoint_every": EVERY,
    "train.keep_checkpoints": 100,
    "train.eval_every": 1000,  # only at the end
    "train.log_every": 1,
}


def _config(**extra):
  """The tiny config with OVERRIDES, then `extra` ("section.field": v)."""
  c = shakespeare.get_config("tiny")
  for key, value in {**OVERRIDES, **extra}.items():
    section, name = key.split(".")
    c[section][name] = value
  return c


def _extra(**kw):
  """_extra(steps=3) -> {"train.steps": 3}."""
  return {f"train.{k}": v for k, v in kw.items()}


def _main_cmd(workdir, **train_overrides):
  """`python -m routing_jax.main` with the config of _config()."""
  flags = {**OVERRIDES, **_extra(**train_overrides)}
  return [
      sys.executable,
      "-m",
      "routing_jax.main",
      "--config=experiments/shakespeare.py:tiny",
      f"--workdir={workdir}",
      "--nosample",
      *(f"--config.{k}={v}" for k, v in flags.items()),
  ]


def _env():
  """This process's devices and compilation cache for a subprocess."""
  return dict(
      os.environ,
      JAX_COMPILATION_CACHE_DIR=str(ROOT / "tests" / ".jax_cache"),
      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
  )


def _committed_steps(workdir):
  ckpt_dir = pathlib.Path(workdir) / "checkpoints"
  if not ckpt_dir.is_dir():
    return []
  return sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())


def _restore(workdir, like, step):
  """(state, data_state) of checkpoint `step`, on the shardings of like."""
  with checkpointing.Checkpointer(
      pathlib.Path(workdir) / "checkpoints", keep=100
  ) as ckpt:
    state, data, _ = ckpt.restore(like, step=step)
  return state, data


def _assert_bitwise_equal(a, b):
  la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)
  assert len(la) == len(lb) and la
  for (path, x), y in zip(la, lb):
    x, y = np.atleast_1d(np.asarray(x)), np.atleast_1d(np.asarray(y))
    assert x.dtype == y.dtype and x.shape == y.shape
    assert np.array_equal(
        x.view(np.uint8), y.view(np.uint8)
    ), jax.tree_util.keystr(path)


def _run(workdir, **train_overrides):
  return train_loop.train_and_evaluate(
      _config(**_extra(**train_overrides)), str(workdir)
  )


@pytest.fixture(name="reference", scope="module")
def fixture_reference(tmp_path_factory):
  """The straight run of STEPS steps: (workdir, final state)."""
  workdir = tmp_path_factory.mktemp("reference")
  result = _run(workdir)
  assert result.start_step == 0 and result.step == STEPS
  assert _committed_steps(workdir) == list(range(EVERY, STEPS + 1, EVERY))
  state = result.state
  start = time.perf_counter()
  restored, data = _restore(workdir, state, STEPS)
  restore_s = time.perf_counter() - start
  _assert_bitwise_equal(restored, state)
  assert data["step"] == STEPS and data["dataset"] == "shakespeare"
  print(
      f"\nreference: {STEPS} steps in {result.wall_s:.1f}s,"
      f" restore {restore_s * 1e3:.0f} ms"
  )
  return workdir, state


def _assert_same_final_checkpoint(workdir, reference):
  ref_dir, ref_state = reference
  ref, ref_data = _restore(ref_dir, ref_state, STEPS)
  got, data = _restore(workdir, ref_state, STEPS)
  # Parameters, optimizer state, k-means state, step and rng.
  _assert_bitwise_equal(got, ref)
  assert data == ref_data and data["step"] == STEPS


def test_resume_is_bitwise_the_straight_run(tmp_path, reference, capsys):
  # Synchronous saves in the first run, asynchronous ones in the second
  # (the reference run saved asynchronously).
  first = _run(tmp_path, steps=EVERY, async_checkpointing=False)
  assert first.step == EVERY and _committed_steps(tmp_path) == [EVERY]
  second = _run(tmp_path, async_checkpointing=True)
  assert (second.start_step, second.step) == (EVERY, STEPS)
  assert f"resumed from step {EVERY} (" in capsys.readouterr().out
  _assert_same_final_checkpoint(tmp_path, reference)


def _watchdog(proc, seconds):
  timer = threading.Timer(seconds, proc.kill)
  timer.daemon = True
  timer.start()
  return timer


@pytest.mark.slow
def test_sigkill_after_a_checkpoint_then_resume(tmp_path, reference):
  # Frequent saves (they do not change the results) leave steps to kill.
  proc = subprocess.Popen(
      _main_cmd(tmp_path, checkpoint_every=2),
      cwd=ROOT,
      env=_env(),
      stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL,
  )
  timer = _watchdog(proc, 180)
  try:
    # A step directory without the tmp suffix is committed.
    while not _committed_steps(tmp_path) and proc.poll() is None:
      time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
  finally:
    timer.cancel()
  killed_at = _committed_steps(tmp_path)[-1]
  assert killed_at < STEPS, "the run ended before it was killed"
  result = _run(tmp_path)
  assert (result.start_step, result.step) == (killed_at, STEPS)
  _assert_same_final_checkpoint(tmp_path, reference)
  # Unfinished saves of the killed run were cleaned up.
  assert not [
      p for p in (tmp_path / "checkpoints").iterdir() if "tmp" in p.name
  ]


@pytest.mark.slow
def test_sigterm_saves_exits_zero_and_resume_finishes(
    tmp_path, reference, capsys
):
  proc = subprocess.Popen(
      _main_cmd(tmp_path),
      cwd=ROOT,
      env=_env(),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
  )
  timer = _watchdog(proc, 180)
  lines = []
  try:
    for line in proc.stdout:
      lines.append(line)
      if re.match(rf"step 1/{STEPS} \|", line):
        proc.send_signal(signal.SIGTERM)
        break
    lines += proc.stdout.readlines()
    assert proc.wait() == 0, "".join(lines)
  finally:
    timer.cancel()
  out = "".join(lines)
  done = [int(s) for s in re.findall(rf"^step (\d+)/{STEPS} ", out, re.M)]
  stopped_at = done[-1]
  assert stopped_at < STEPS, "the run ended before SIGTERM arrived"
  assert "final validation" not in out  # A preempted run does not report.
  # The preemption save is the newest checkpoint, at the step reached,
  # with the data iterator positioned after the batches it consumed.
  assert _committed_steps(tmp_path)[-1] == stopped_at
  _, data = _restore(tmp_path, reference[1], stopped_at)
  assert data["step"] == stopped_at

  result = _run(tmp_path)
  assert (result.start_step, result.step) == (stopped_at, STEPS)
  progress = re.findall(rf"^step (\d+)/{STEPS} ", capsys.readouterr().out, re.M)
  assert progress[0] == str(stopped_at + 1) and progress[-1] == str(STEPS)
  # Bitwise the straight run: the data continued where it stopped.
  _assert_same_final_checkpoint(tmp_path, reference)


def test_truncated_newest_checkpoint_falls_back(tmp_path, reference, caplog):
  workdir = tmp_path / "run"
  shutil.copytree(reference[0], workdir)
  newest = workdir / "checkpoints" / str(STEPS)
  arrays = [
      p
      for p in (newest / "state").rglob("*")
      if p.is_file() and p.parent.name == "d"
  ]
  assert arrays
  for p in arrays:
    with open(p, "r+b") as f:
      f.truncate(p.stat().st_size // 2)
  with caplog.at_level("WARNING"):
    result = _run(workdir)
  assert result.start_step == STEPS - EVERY
  assert any(
      f"step {STEPS}" in r.getMessage()
      and "cannot be restored" in r.getMessage()
      for r in caplog.records
  )
  moved = list((workdir / "checkpoints" / "corrupted").iterdir())
  assert [p.name.split("-")[0] for p in moved] == [str(STEPS)]
  # The previous checkpoint plus the replayed steps give the same state.
  _assert_same_final_checkpoint(workdir, reference)


def _nan_at(step, monkeypatch):
  """Makes the train step report a NaN loss once the state reaches step.

  Returns the list of steps run (it grows as the run goes).
  """
  build = train.build_trainer
  ran = []

  def build_with_nan(*args, **kwargs):
    trainer, state = build(*args, **kwargs)
    real = trainer.train_step

    def step_fn(state, batch):
      state, m = real(state, batch)
      ran.append(len(ran) + 1)
      if len(ran) == step:  # a fresh run: call i makes step i
        m = dict(m, loss=jax.numpy.float32(np.nan))
      return state, m

    trainer.train_step = step_fn
    return trainer, state

  monkeypatch.setattr(train, "build_trainer", build_with_nan)
  return ran


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    tmp_path, reference, monkeypatch
):
  _nan_at(10, monkeypatch)
  with pytest.raises(train_loop.NonFiniteLossError) as e:
    _run(tmp_path)
  message = str(e.value)
  assert "non-finite loss=nan at step 10" in message
  assert "last good checkpoint (step 8)" in message
  assert _committed_steps(tmp_path) == [8]  # Nothing saved after it.
  good, data = _restore(tmp_path, reference[1], 8)
  ref, _ = _restore(reference[0], reference[1], 8)
  _assert_bitwise_equal(good, ref)
  assert data["step"] == 8


def test_nan_between_log_points_stops_at_the_next_save_unsaved(
    tmp_path, reference, monkeypatch
):
  """Metrics reach the host only at log and checkpoint points: with no log
  before the end, a NaN at step 10 is found at the checkpoint of step 16,
  which is not written."""
  ran = _nan_at(10, monkeypatch)
  with pytest.raises(train_loop.NonFiniteLossError) as e:
    _run(tmp_path, log_every=1000)
  assert "non-finite loss=nan at step 10" in str(e.value)
  assert ran[-1] == 16  # it ran on to the save point
  assert _committed_steps(tmp_path) == [8]
  good, _ = _restore(tmp_path, reference[1], 8)
  ref, _ = _restore(reference[0], reference[1], 8)
  _assert_bitwise_equal(good, ref)


def test_resume_with_a_different_model_config_fails(tmp_path, reference):
  """Checkpoint shapes alone do not tell "topk" from "causal" routing."""
  workdir = tmp_path / "run"
  shutil.copytree(reference[0], workdir)
  config = _config()
  config.model.routing.mode = "topk"
  with pytest.raises(ValueError, match="different model config section"):
    train_loop.train_and_evaluate(config, str(workdir))
  assert _committed_steps(workdir) == list(range(EVERY, STEPS + 1, EVERY))


@pytest.fixture(autouse=True)
def _short_retries(monkeypatch):
  """Failed checkpoint reads are tried again at once (really: seconds)."""
  monkeypatch.setattr(checkpoint_reads, "RETRY_DELAYS_S", (0.01, 0.01))


def _copy(reference, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(reference[0], workdir)
  return workdir


@pytest.mark.parametrize(
    "damage", [faults.delete_state_metadata, faults.flip_bytes]
)
def test_damage_of_the_final_step_costs_no_work(
    tmp_path, reference, caplog, damage
):
  """Damage Orbax misreports (a missing _METADATA: a pytree error) or does
  not see (flipped bytes: wrong values, caught by the checksums) moves the
  step aside, and the resumed run saves the final state again."""
  workdir = _copy(reference, tmp_path)
  damage(workdir / "checkpoints" / str(STEPS))
  with caplog.at_level("WARNING"):
    result = _run(workdir)
  assert (result.start_step, result.step) == (STEPS - EVERY, STEPS)
  moved = list((workdir / "checkpoints" / "corrupted").iterdir())
  assert [p.name.split("-")[0] for p in moved] == [str(STEPS)]
  if damage is faults.flip_bytes:
    assert any("ChecksumError" in r.getMessage() for r in caplog.records)
  _assert_same_final_checkpoint(workdir, reference)


def test_non_finite_loss_right_after_a_restore_falls_back(
    tmp_path, reference, monkeypatch, caplog
):
  """A restored state that diverges at once is not trusted: the run goes
  back to the checkpoint before it and replaces it with the replayed one."""
  workdir = _copy(reference, tmp_path)
  _nan_at(1, monkeypatch)  # the first step after the first restore only
  with caplog.at_level("WARNING"):
    result = _run(workdir, steps=STEPS + 1)
  assert (result.start_step, result.step) == (STEPS - EVERY, STEPS + 1)
  assert any(
      f"after restoring step {STEPS}" in r.getMessage()
      and "Falling back" in r.getMessage()
      for r in caplog.records
  )
  moved = list((workdir / "checkpoints" / "corrupted").iterdir())
  assert [p.name.split("-")[0] for p in moved] == [str(STEPS)]
  _assert_same_final_checkpoint(workdir, reference)


@pytest.mark.parametrize(
    "change", [{"data.batch_size": 16}, {"model.d_model": 64}]
)
def test_rejected_resume_keeps_config_json(tmp_path, reference, change):
  workdir = _copy(reference, tmp_path)
  before = (workdir / "config.json").read_text()
  with pytest.raises((ValueError, checkpointing.CheckpointRestoreError)):
    train_loop.train_and_evaluate(_config(**change), str(workdir))
  assert (workdir / "config.json").read_text() == before
  assert _committed_steps(workdir) == [EVERY, STEPS]


def test_steps_below_the_checkpoint_are_refused(tmp_path, reference):
  workdir = _copy(reference, tmp_path)
  before = (workdir / "config.json").read_text()
  with pytest.raises(
      errors.UserInputError,
      match=rf"train.steps=12 is below step {STEPS} of the checkpoint",
  ):
    _run(workdir, steps=12)
  assert _committed_steps(workdir) == [EVERY, STEPS]
  assert not (workdir / "checkpoints" / "corrupted").exists()
  assert (workdir / "config.json").read_text() == before


def test_resume_drops_metrics_rows_past_the_checkpoint(tmp_path, reference):
  """As after a SIGKILL between the checkpoint of step 8 and the end: the
  rows of steps 9..16 were written, the checkpoint of step 16 was not."""
  workdir = _copy(reference, tmp_path)
  shutil.rmtree(workdir / "checkpoints" / str(STEPS))
  with open(workdir / "metrics.jsonl", "a", encoding="utf-8") as f:
    f.write('{"step": 17, "train/lo')  # a row cut short by the kill
  _run(workdir)
  rows = [
      json.loads(line)
      for line in (workdir / "metrics.jsonl").read_text().splitlines()
  ]
  train_steps = [r["step"] for r in rows if "train/loss_nats" in r]
  assert train_steps == list(range(1, STEPS + 1))
  eval_steps = [r["step"] for r in rows if "eval/loss_nats" in r]
  assert eval_steps == [STEPS]


def test_wall_clock_checkpoints_come_at_log_points(tmp_path, reference):
  """train.checkpoint_every_minutes adds saves at log points once that much
  wall time has passed (here: always), besides checkpoint_every; saving
  changes nothing in the run."""
  _run(tmp_path, checkpoint_every_minutes=1e-9, log_every=5)
  assert _committed_steps(tmp_path) == [5, 8, 10, 15, 16]
  _assert_same_final_checkpoint(tmp_path, reference)
  with pytest.raises(ValueError, match="train.checkpoint_every_minutes"):
    train.validate_config(_config(**_extra(checkpoint_every_minutes=-1)))
