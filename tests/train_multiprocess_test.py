"""Two cooperating processes train like one (launch/local_multiprocess.sh).

Two `routing_jax.main` processes with one CPU device each meet at a
coordinator on 127.0.0.1 (a fresh port per run); each reads its half of
every global batch. Their losses must match a single process training the
same config on 8 devices (different reduction orders: rtol 1e-5), and the
multi-process checkpoint must restore here, onto 8 devices.
"""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments import shakespeare
from routing_jax import checkpointing
from routing_jax import train_loop

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS = 4
# As in train_resume_test (the single-process step compiles once).
OVERRIDES = {
    "train.schedule": "rsqrt",
    "train.warmup_steps": 2,
    "train.steps": STEPS,
    "train.checkpoint_every": 2,
    "train.eval_every": 1000,
    "train.log_every": 1,
}


def _rows(workdir):
  lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return [json.loads(line) for line in lines]


def _launch(tmp_path, workdir, num_processes=2):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(PYTHON=sys.executable, DEVICES_PER_PROCESS="1",
             LOG_DIR=str(tmp_path / "logs"), JAX_PLATFORMS="cpu",
             JAX_COMPILATION_CACHE_DIR=str(ROOT / "tests" / ".jax_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")
  cmd = ["bash", str(ROOT / "launch" / "local_multiprocess.sh"),
         str(num_processes), "--config=experiments/shakespeare.py:tiny",
         f"--workdir={workdir}", "--nosample",
         *(f"--config.{k}={v}" for k, v in OVERRIDES.items())]
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=400, check=False)


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path):
  multi = tmp_path / "multi"
  result = _launch(tmp_path, multi)
  logs = {i: (tmp_path / "logs" / f"proc_{i}.log").read_text()
          for i in range(2)}
  assert result.returncode == 0, result.stderr + logs[0][-2000:]
  assert "all 2 processes succeeded" in result.stderr

  config = shakespeare.get_config("tiny")
  for key, value in OVERRIDES.items():
    section, name = key.split(".")
    config[section][name] = value
  single = tmp_path / "single"
  summary = train_loop.train_and_evaluate(config, str(single))

  rows, ref = _rows(multi), _rows(single)
  # Process 0 alone writes: one row per step plus the final eval.
  assert [r["step"] for r in rows] == [1, 2, 3, 4, 4]
  assert [r["step"] for r in ref] == [r["step"] for r in rows]
  for key in ("train/loss_nats", "train/grad_norm", "eval/loss_nats"):
    got = [r[key] for r in rows if key in r]
    want = [r[key] for r in ref if key in r]
    assert got
    np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=key)
  assert ref[-1]["eval/tokens"] == rows[-1]["eval/tokens"] == 512
  # Only process 0 prints progress.
  assert f"step {STEPS}/{STEPS} |" in logs[0]
  assert "step 1/" not in logs[1]
  assert "final validation" in logs[0]
  assert "final validation" not in logs[1]

  # The 2-process checkpoint restores onto this process's 8 devices.
  state = summary["state"]
  with checkpointing.Checkpointer(multi / "checkpoints") as ckpt:
    assert ckpt.all_steps() == [2, 4]
    restored, data, step = ckpt.restore(state)
  assert step == STEPS and data["step"] == STEPS
  assert int(restored.step) == STEPS
  np.testing.assert_array_equal(np.asarray(restored.rng),
                                np.asarray(state.rng))
  for (path, got), want in zip(
      jax.tree_util.tree_leaves_with_path(restored.params),
      jax.tree.leaves(state.params)):
    # Adam turns float32 noise in tiny gradients into lr-sized steps.
    np.testing.assert_allclose(np.asarray(got), np.asarray(want),
                               rtol=1e-5, atol=1e-4,
                               err_msg=jax.tree_util.keystr(path))
