# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Tests for the launch/ scripts: syntax, argument checks, commands issued.

The local multi-process launcher runs for real (2 processes on CPU devices
with a stand-in module, tests/helpers/psum_worker.py); the cluster launchers
are checked up to the command they would run.
"""

import json
import os
import pathlib
import shlex
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
SCRIPTS = [
    "tpu_pod.sh",
    "gpu_slurm.sbatch",
    "gpu_multinode.sh",
    "local_multiprocess.sh",
]


def _env(**overrides):
  env = {
      k: v
      for k, v in os.environ.items()
      if k
      not in (
          "XLA_FLAGS",
          "PROCESS_ID",
          "NUM_PROCESSES",
          "COORDINATOR_ADDRESS",
          "SLURM_JOB_ID",
          "CONFIG",
          "WORKDIR",
          "TPU_NAME",
          "TPU_ZONE",
          "PYTHON",
          "MODULE",
          "GPU_XLA_FLAGS",
      )
  }
  env.update(overrides)
  return env


def _run(args, timeout=60, **env):
  return subprocess.run(
      ["bash", *map(str, args)],
      cwd=ROOT,
      env=_env(**env),
      capture_output=True,
      text=True,
      timeout=timeout,
      check=False,
  )


@pytest.mark.parametrize("script", SCRIPTS)
def test_syntax_and_help(script):
  assert _run(["-n", LAUNCH / script]).returncode == 0
  usage = _run([LAUNCH / script, "--help"])
  assert "Usage" in usage.stdout + usage.stderr
  assert "set -euo" not in usage.stdout + usage.stderr


def _local(tmp_path, *args, num_processes=2, devices=2):
  return _run(
      [
          LAUNCH / "local_multiprocess.sh",
          num_processes,
          f"--out_dir={tmp_path / 'out'}",
          *args,
      ],
      timeout=120,
      PYTHON=sys.executable,
      MODULE="psum_worker",
      PYTHONPATH=str(ROOT / "tests" / "helpers"),
      DEVICES_PER_PROCESS=str(devices),
      LOG_DIR=str(tmp_path / "logs"),
  )


@pytest.mark.slow
def test_local_multiprocess_cross_process_psum(tmp_path):
  result = _local(tmp_path, "--config.train.steps=3")
  assert result.returncode == 0, result.stderr
  assert sorted(os.listdir(tmp_path / "logs")) == ["proc_0.log", "proc_1.log"]
  for i in range(2):
    seen = json.loads((tmp_path / "out" / f"proc_{i}.json").read_text())
    # Process p puts p + 1 on each of its 2 devices: 1 + 1 + 2 + 2.
    assert seen == {
        "process_index": i,
        "process_count": 2,
        "device_count": 4,
        "local_device_count": 2,
        "platform": "cpu",
        "sum": 6.0,
        "passed_through": ["--config.train.steps=3"],
    }


@pytest.mark.slow
def test_local_multiprocess_failure_kills_the_rest(tmp_path):
  start = time.monotonic()
  # Process 2 exits at once; 0 and 1 would wait for it in initialize().
  result = _local(tmp_path, "--fail_process=2", num_processes=3, devices=1)
  assert result.returncode != 0
  assert "process 2 exited with status 3" in result.stderr
  assert time.monotonic() - start < 30
  assert not (tmp_path / "out").exists()


def test_local_multiprocess_rejects_bad_count():
  result = _run([LAUNCH / "local_multiprocess.sh", "two"])
  assert result.returncode != 0 and "positive integer" in result.stderr


MULTINODE_OK = dict(
    COORDINATOR_ADDRESS="10.0.0.1:1234", NUM_PROCESSES="4", PROCESS_ID="3"
)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(PROCESS_ID=None), "PROCESS_ID: must be set"),
        (dict(NUM_PROCESSES=None), "NUM_PROCESSES: must be set"),
        (dict(COORDINATOR_ADDRESS=None), "COORDINATOR_ADDRESS: must be set"),
        (dict(PROCESS_ID="4"), "PROCESS_ID must be < NUM_PROCESSES (4), got 4"),
        (dict(PROCESS_ID="-1"), "PROCESS_ID must be a non-negative integer"),
        (dict(PROCESS_ID="x"), "PROCESS_ID must be a non-negative integer"),
        (dict(NUM_PROCESSES="0"), "NUM_PROCESSES must be a positive integer"),
        (dict(COORDINATOR_ADDRESS="10.0.0.1"), "COORDINATOR_ADDRESS must be"),
        (dict(COORDINATOR_ADDRESS="host:70000"), "port must be in 1..65535"),
    ],
)
def test_gpu_multinode_validates_before_launching(change, message, tmp_path):
  marker = tmp_path / "launched"
  fake_python = tmp_path / "python"
  fake_python.write_text(f"#!/bin/sh\ntouch {marker}\n")
  fake_python.chmod(0o755)
  env = {**MULTINODE_OK, **change}
  env = {k: v for k, v in env.items() if v is not None}
  result = _run([LAUNCH / "gpu_multinode.sh"], PYTHON=str(fake_python), **env)
  assert result.returncode != 0
  assert message in result.stderr
  assert not marker.exists()  # It failed before starting python.
  ok = _run(
      [LAUNCH / "gpu_multinode.sh"], PYTHON=str(fake_python), **MULTINODE_OK
  )
  assert ok.returncode == 0 and marker.exists()


def _print_args_program(tmp_path, name):
  program = tmp_path / name
  program.write_text('#!/bin/sh\nprintf "[%s]" "$@"\n')
  program.chmod(0o755)
  return program


def test_gpu_multinode_execs_main_with_flags(tmp_path):
  result = _run(
      [LAUNCH / "gpu_multinode.sh", "--config.train.steps=7", "a b"],
      PYTHON=str(_print_args_program(tmp_path, "python")),
      CONFIG="experiments/x.py:s",
      WORKDIR="/shared/w",
      **MULTINODE_OK,
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout == (
      "[-m][routing_jax.main][--config=experiments/x.py:s]"
      "[--workdir=/shared/w][--distributed]"
      "[--coordinator_address=10.0.0.1:1234][--num_processes=4]"
      "[--process_id=3][--config.train.steps=7][a b]"
  )


def test_gpu_slurm_runs_srun_with_distributed(tmp_path):
  path = f"{_print_args_program(tmp_path, 'srun').parent}:{os.environ['PATH']}"
  result = _run(
      [LAUNCH / "gpu_slurm.sbatch", "--config.train.steps=9"],
      PATH=path,
      SLURM_JOB_ID="42",
      SLURM_JOB_NAME="rj",
      SLURM_SUBMIT_DIR=str(tmp_path),
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout == (
      "[--kill-on-bad-exit=1][python][-m][routing_jax.main]"
      "[--config=experiments/enwik8.py]"
      f"[--workdir={tmp_path}/workdirs/rj][--distributed]"
      "[--config.train.steps=9]"
  )
  outside = _run([LAUNCH / "gpu_slurm.sbatch"], PATH=path)
  assert outside.returncode != 0 and "SLURM_JOB_ID" in outside.stderr


def test_tpu_pod_dry_run_prints_gcloud_commands():
  result = _run([
      LAUNCH / "tpu_pod.sh",
      "--dry-run",
      "--name=rj-pod",
      "--zone=us-central2-b",
      "--type=v4-32",
      "--spot",
      "--workdir=gs://bucket/run",
      "--",
      "--config.train.steps=5",
      "--config.note=it's x",
  ])
  assert result.returncode == 0, result.stderr
  lines = [l for l in result.stdout.splitlines() if l.startswith("gcloud")]
  assert lines[0] == (
      "gcloud compute tpus tpu-vm create rj-pod --zone=us-central2-b"
      " --accelerator-type=v4-32 --version=tpu-ubuntu2204-base --spot"
  )
  assert lines[1] == (
      f"gcloud compute tpus tpu-vm scp --recurse /tmp/rj_stage/routing-jax"
      f" rj-pod:./ --zone=us-central2-b --worker=all"
  )
  install, train = (shlex.split(l) for l in lines[2:])
  prefix = [
      "gcloud",
      "compute",
      "tpus",
      "tpu-vm",
      "ssh",
      "rj-pod",
      "--zone=us-central2-b",
      "--worker=all",
  ]
  assert install[:-1] == prefix and train[:-1] == prefix
  assert 'pip install -q -e ".[gcs]" "jax[tpu]' in install[-1]
  command = train[-1].removeprefix("--command=")
  assert shlex.split(command) == [
      "cd",
      "routing-jax",
      "&&",
      ".",
      ".venv/bin/activate",
      "&&",
      "python",
      "-m",
      "routing_jax.main",
      "--config=experiments/enwik8.py",
      "--workdir=gs://bucket/run",
      "--distributed",
      "--config.train.steps=5",
      "--config.note=it's x",
  ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--zone=z", "--workdir=gs://b"], "TPU name is required"),
        (["--name=n", "--workdir=gs://b"], "zone is required"),
        (["--name=n", "--zone=z"], "workdir is required"),
        (
            ["--name=n", "--zone=z", "--workdir=gs://b", "--steps=3"],
            "unknown option '--steps=3'",
        ),
    ],
)
def test_tpu_pod_argument_errors(args, message):
  result = _run([LAUNCH / "tpu_pod.sh", "--dry-run", *args])
  assert result.returncode != 0 and message in result.stderr
