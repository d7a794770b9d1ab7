# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Two cooperating processes train like one (launch/local_multiprocess.sh).

Two `routing_jax.main` processes with one CPU device each meet at a
coordinator on 127.0.0.1 (a fresh port per run). Their losses must match a
single process training the same config on 8 devices (different reduction
orders: rtol 1e-5) on two meshes:

  fsdp=2    parameters sharded across the processes, each process reads
            its half of every batch; the run ends by sampling (a collective
            over the sharded parameters), and both processes must sample
            the same text.
  tensor=2  the batch is replicated over "tensor", so both processes must
            read the whole batch (a 1/process_count split gave a global
            batch of 4 rows and different losses).

The multi-process checkpoint must restore here, onto 8 devices. Both runs
start together (with the single-process reference) to keep the suite fast
on 2 cores.
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments import shakespeare
from routing_jax.training import checkpointing
from routing_jax.training import train_loop

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
    # The dense warm-up ends mid-run: every process switches to the routed
    # step at the same step, and sampling (tensor run: k-means counters
    # sharded across the processes) checks that it has ended.
    "model.routing.warmup_steps": 2,
    # Two heads of each kind, so that mesh.tensor=2 splits whole heads.
    "model.num_heads": 4,
    "model.num_routing_heads": 2,
}
MESHES = {
    "fsdp": {"mesh.data": 1, "mesh.fsdp": 2},
    "tensor": {"mesh.data": 1, "mesh.tensor": 2},
}
ABSL_LINE = re.compile(r"^[IWEF]\d{4} ")


def _rows(workdir):
  lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return [json.loads(line) for line in lines]


def _popen(cmd, env):
  return subprocess.Popen(
      cmd,
      cwd=ROOT,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
  )


def _start(tmp_path, name, sample):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(
      PYTHON=sys.executable,
      DEVICES_PER_PROCESS="1",
      LOG_DIR=str(tmp_path / name / "logs"),
      JAX_PLATFORMS="cpu",
      JAX_COMPILATION_CACHE_DIR=str(ROOT / "tests" / ".jax_cache"),
      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
  )
  overrides = {**OVERRIDES, **MESHES[name]}
  cmd = [
      "bash",
      str(ROOT / "launch" / "local_multiprocess.sh"),
      "2",
      "--config=experiments/shakespeare.py:tiny",
      f"--workdir={tmp_path / name / 'workdir'}",
      # INFO logs: process 1 logs the final report it computed.
      "--sample" if sample else "--nosample",
      "--verbosity=0",
      *(f"--config.{k}={v}" for k, v in overrides.items()),
  ]
  return _popen(cmd, env)


@pytest.fixture(name="runs", scope="module")
def fixture_runs(tmp_path_factory):
  """{name: (returncode, stderr, {i: proc_i.log}, workdir)} and reference."""
  tmp_path = tmp_path_factory.mktemp("multiprocess")
  procs = {
      "fsdp": _start(tmp_path, "fsdp", sample=True),
      "tensor": _start(tmp_path, "tensor", sample=True),
  }
  try:
    config = shakespeare.get_config("tiny")
    for key, value in OVERRIDES.items():
      *path, name = key.split(".")
      section = config
      for part in path:
        section = section[part]
      section[name] = value
    single = tmp_path / "single"
    result = train_loop.train_and_evaluate(config, str(single))
    runs = {}
    for name, proc in procs.items():
      _, stderr = proc.communicate(timeout=500)
      logs = {
          i: (tmp_path / name / "logs" / f"proc_{i}.log").read_text()
          for i in range(2)
      }
      runs[name] = (proc.returncode, stderr, logs, tmp_path / name / "workdir")
  finally:
    for proc in procs.values():
      if proc.poll() is None:
        proc.kill()
  return runs, single, result


def _check_losses_match(run, single):
  returncode, stderr, logs, workdir = run
  assert returncode == 0, stderr + logs[0][-2000:] + logs[1][-2000:]
  assert "all 2 processes succeeded" in stderr
  rows, ref = _rows(workdir), _rows(single)
  # Process 0 alone writes: one row per step plus the final eval.
  assert [r["step"] for r in rows] == [1, 2, 3, 4, 4]
  assert [r["step"] for r in ref] == [r["step"] for r in rows]
  for key in ("train/loss_nats", "train/grad_norm", "eval/loss_nats"):
    got = [r[key] for r in rows if key in r]
    want = [r[key] for r in ref if key in r]
    assert got
    np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=key)
  assert ref[-1]["eval/tokens"] == rows[-1]["eval/tokens"] == 512


def _sample(log):
  """The sampled text in a log: the lines after "sample:", up to a log line."""
  lines = log.split("\nsample:\n", 1)[1].splitlines()
  end = next((i for i, l in enumerate(lines) if ABSL_LINE.match(l)), len(lines))
  return "\n".join(lines[:end])


@pytest.mark.slow
def test_two_processes_with_sharded_params_train_and_sample_like_one(runs):
  runs, single, result = runs
  _check_losses_match(runs["fsdp"], single)
  _, _, logs, multi = runs["fsdp"]
  # Only process 0 prints progress and the report; process 1 logs the
  # report it computed, with the same sample.
  assert f"step {STEPS}/{STEPS} |" in logs[0]
  assert "step 1/" not in logs[1]
  assert "\nfinal validation" in logs[0]
  assert "Final report (printed by process 0)" in logs[1]
  assert _sample(logs[0]).startswith("HAMLET:\n")
  assert len(_sample(logs[0])) > len("HAMLET:\n")
  assert _sample(logs[1]) == _sample(logs[0])

  # The 2-process checkpoint restores onto this process's 8 devices.
  state = result.state
  with checkpointing.Checkpointer(multi / "checkpoints") as ckpt:
    assert ckpt.all_steps() == [2, 4]
    restored, data, step = ckpt.restore(state)
  assert step == STEPS and data["step"] == STEPS
  assert int(restored.step) == STEPS
  np.testing.assert_array_equal(np.asarray(restored.rng), np.asarray(state.rng))
  for (path, got), want in zip(
      jax.tree_util.tree_leaves_with_path(restored.params),
      jax.tree.leaves(state.params),
  ):
    # Adam turns float32 noise in tiny gradients into lr-sized steps.
    np.testing.assert_allclose(
        np.asarray(got),
        np.asarray(want),
        rtol=1e-5,
        atol=1e-4,
        err_msg=jax.tree_util.keystr(path),
    )


@pytest.mark.slow
def test_tensor_axis_across_processes_reads_the_whole_batch(runs):
  runs, single, _ = runs
  _check_losses_match(runs["tensor"], single)
  _, _, logs, _ = runs["tensor"]
  assert _sample(logs[0]).startswith("HAMLET:\n")
  assert _sample(logs[1]) == _sample(logs[0])


def _cli(tmp_path, name, module, workdir, *args):
  """`module` with 2 processes over the fsdp run's mesh."""
  overrides = {
      k: v for k, v in {**OVERRIDES, **MESHES["fsdp"]}.items() if "model" in k
  }
  overrides.update({"mesh.data": 1, "mesh.fsdp": 2})
  flags = [
      "--config=experiments/shakespeare.py:tiny",
      f"--workdir={workdir}",
      *(f"--config.{k}={v}" for k, v in overrides.items()),
      *args,
  ]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(
      PYTHON=sys.executable,
      MODULE=module,
      DEVICES_PER_PROCESS="1",
      LOG_DIR=str(tmp_path / name),
      JAX_PLATFORMS="cpu",
  )
  cmd = ["bash", str(ROOT / "launch" / "local_multiprocess.sh"), "2", *flags]
  return _popen(cmd, env)


@pytest.mark.slow
def test_evaluate_and_sample_run_with_two_processes(runs, tmp_path):
  """A model trained with its parameters sharded over two processes is
  evaluated and sampled with two processes; process 0 alone prints."""
  runs, _, reference = runs
  workdir = runs["fsdp"][3]
  procs = {
      # The batches of the runs' own final evaluation (eval_batches=1).
      "eval2": _cli(
          tmp_path, "eval2", "routing_jax.evaluate", workdir, "--max_batches=1"
      ),
      "sample2": _cli(
          tmp_path,
          "sample2",
          "routing_jax.sample",
          workdir,
          "--prompt=HAMLET:",
          "--length=8",
      ),
  }
  for proc in procs.values():
    _, stderr = proc.communicate(timeout=400)
    assert proc.returncode == 0, stderr[-3000:]
  logs = lambda name: [
      (tmp_path / name / f"proc_{i}.log").read_text() for i in range(2)
  ]
  printed = lambda text: re.findall(r"^\{\n.*?^\}$", text, re.M | re.S)
  (two,) = map(json.loads, printed(logs("eval2")[0]))
  assert not printed(logs("eval2")[1])  # process 1 prints nothing
  assert two["step"] == STEPS
  # The single-process run on 8 devices trained the same model (losses
  # equal to rtol 1e-5, see above) and evaluated it on the same batch.
  np.testing.assert_allclose(
      two["loss_nats"], reference.last_eval["eval/loss_nats"], rtol=1e-5
  )
  first, second = logs("sample2")
  assert "HAMLET:" in first and "HAMLET:" not in second
