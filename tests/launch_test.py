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
@pytest.mark.parametrize("differs_on", [-1, 1])
def test_processes_check_they_run_the_same_program(tmp_path, differs_on):
  """main's start-up check (multihost.check_same_program): the same code
  and config everywhere, or every process stops naming the odd one."""
  result = _local(tmp_path, f"--config_differs_on={differs_on}", devices=1)
  assert result.returncode == 0, result.stderr
  for i in range(2):
    seen = json.loads((tmp_path / "out" / f"proc_{i}.json").read_text())
    if differs_on < 0:
      assert seen["program_check"] == "same"
    else:
      assert seen["program_check"] == (
          "the config (flags included) differs between processes "
          "(processes [1] differ from process 0)"
      )


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


def test_gpu_slurm_shares_cpus_and_caps_preallocation(tmp_path):
  srun = tmp_path / "srun"
  srun.write_text(
      '#!/bin/sh\necho "$XLA_PYTHON_CLIENT_MEM_FRACTION"; printf "[%s]" "$@"\n'
  )
  srun.chmod(0o755)
  result = _run(
      [LAUNCH / "gpu_slurm.sbatch"],
      PATH=f"{tmp_path}:{os.environ['PATH']}",
      SLURM_JOB_ID="42",
      SLURM_SUBMIT_DIR=str(tmp_path),
      SLURM_CPUS_ON_NODE="96",
      SLURM_NTASKS_PER_NODE="8",
  )
  assert result.returncode == 0, result.stderr
  fraction, args = result.stdout.split("\n", 1)
  assert fraction == "0.9"
  assert args.startswith("[--kill-on-bad-exit=1][--cpus-per-task=12][python]")


def test_gpu_slurm_requeues_itself_when_signalled(tmp_path):
  """SIGTERM (preemption, or the time limit ahead) reaches the trainer,
  which saves and exits 0; the job then asks SLURM to requeue it."""
  srun = tmp_path / "srun"
  srun.write_text(
      "#!/bin/bash\nsleep 60 & pid=$!\n"
      f'trap "kill $pid; echo saved > {tmp_path}/saved; exit 0" TERM\n'
      f"echo started > {tmp_path}/started\nwait\n"
  )
  scontrol = tmp_path / "scontrol"
  scontrol.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/scontrol.log\n')
  for p in (srun, scontrol):
    p.chmod(0o755)
  job = subprocess.Popen(
      ["bash", str(LAUNCH / "gpu_slurm.sbatch")],
      cwd=ROOT,
      env=_env(
          PATH=f"{tmp_path}:{os.environ['PATH']}",
          SLURM_JOB_ID="42",
          SLURM_SUBMIT_DIR=str(tmp_path),
      ),
      stderr=subprocess.PIPE,
      text=True,
  )
  assert _wait_for(lambda: (tmp_path / "started").exists())
  job.send_signal(15)
  _, stderr = job.communicate(timeout=30)
  assert job.returncode == 0, stderr
  assert (tmp_path / "saved").exists()
  assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "42"]
  assert "requeueing job 42" in stderr


def _tpu_dry_run(*args):
  result = _run([
      LAUNCH / "tpu_pod.sh",
      "--dry-run",
      "--name=rj-pod",
      "--zone=us-central2-b",
      "--workdir=gs://bucket/run",
      *args,
  ])
  assert result.returncode == 0, result.stderr
  return [l for l in result.stdout.splitlines() if l.startswith("gcloud")]


MAIN_ARGS = ["--config.train.steps=5", "--config.note=it's x"]
PREFIX = [
    "gcloud",
    "compute",
    "tpus",
    "tpu-vm",
    "ssh",
    "rj-pod",
    "--zone=us-central2-b",
    "--worker=all",
]


def test_tpu_pod_dry_run_prints_gcloud_commands():
  lines = _tpu_dry_run("--type=v4-32", "--spot", "--", *MAIN_ARGS)
  assert lines[0] == (
      "gcloud compute tpus tpu-vm create rj-pod --zone=us-central2-b"
      " --accelerator-type=v4-32 --version=tpu-ubuntu2204-base --spot"
  )
  assert lines[1] == (
      f"gcloud compute tpus tpu-vm scp --recurse /tmp/rj_stage/routing-jax"
      f" rj-pod:./ --zone=us-central2-b --worker=all"
  )
  install, train = (shlex.split(l) for l in lines[2:])
  assert install[:-1] == PREFIX and train[:-1] == PREFIX
  assert 'pip install -q -e ".[gcs]" "jax[tpu]' in install[-1]


@pytest.mark.parametrize(
    "tpu_type, version",
    [
        ("v4-32", "tpu-ubuntu2204-base"),
        ("v5litepod-16", "v2-alpha-tpuv5-lite"),
        ("v5p-256", "v2-alpha-tpuv5"),
        ("v6e-256", "v2-alpha-tpuv6e"),
    ],
)
def test_tpu_pod_runtime_image_follows_the_accelerator(tpu_type, version):
  create = _tpu_dry_run(f"--type={tpu_type}", "--no-copy", "--no-install")[0]
  assert f"--version={version}" in create
  queued = _tpu_dry_run(f"--type={tpu_type}", "--queued", "--spot")[0]
  assert queued == (
      "gcloud compute tpus queued-resources create rj-pod --node-id=rj-pod"
      f" --zone=us-central2-b --accelerator-type={tpu_type}"
      f" --runtime-version={version} --spot"
  )


def _worker(tmp_path, script):
  """A stand-in TPU worker: ~/routing-jax with a venv whose `python` runs
  `script` (bash), and stub pkill / sudo that only record their calls."""
  home = tmp_path / "home"
  bin_dir = tmp_path / "bin"
  code = home / "routing-jax"
  (code / ".venv" / "bin").mkdir(parents=True)
  bin_dir.mkdir()
  (code / ".venv" / "bin" / "activate").write_text(
      f'export PATH="{bin_dir}:$PATH"\n'
  )
  for name, body in (
      ("python", script),
      ("pkill", f'echo "pkill $*" >> {tmp_path}/stubs; exit 1'),
      ("sudo", f'echo "sudo $*" >> {tmp_path}/stubs'),
  ):
    path = bin_dir / name
    path.write_text("#!/usr/bin/env bash\n" + body + "\n")
    path.chmod(0o755)
  env = dict(_env(), HOME=str(home), PATH=f"{bin_dir}:{os.environ['PATH']}")
  return home, env


def _remote_command(*args):
  train = shlex.split(
      _tpu_dry_run("--no-create", "--no-copy", "--no-install", *args)[-1]
  )
  assert train[:-1] == PREFIX
  return train[-1].removeprefix("--command=")


def _wait_for(predicate, timeout=30.0):
  end = time.time() + timeout
  while time.time() < end:
    if predicate():
      return True
    time.sleep(0.1)
  return False


def test_tpu_pod_runs_detached_and_restarts_a_failed_run(tmp_path):
  """The workers' command, run here: detached, the main args arrive intact
  through two levels of quoting, and a failed run is restarted."""
  calls = tmp_path / "calls"
  script = (
      f'printf "%s\\0" "$@" >> {calls}; echo >> {calls}.n;'
      f' [ "$(wc -l < {calls}.n)" -ge 2 ]'  # fails on the first call
  )
  home, env = _worker(tmp_path, script)
  command = _remote_command(
      "--restarts=2", "--restart-delay=0", "--", *MAIN_ARGS
  )
  started = subprocess.run(
      ["bash", "-c", command], cwd=home, env=env, timeout=30, check=False
  )
  assert started.returncode == 0  # returns at once: detached
  log = home / "routing-jax" / "train.log"
  assert _wait_for(
      lambda: calls.with_suffix(".n").exists()
      and len(calls.with_suffix(".n").read_text()) >= 2
  )
  assert _wait_for(lambda: "restarting" in log.read_text())
  args = calls.read_bytes().split(b"\0")[:-1]
  one = [
      "-m",
      "routing_jax.main",
      "--config=experiments/enwik8.py",
      "--workdir=gs://bucket/run",
      "--distributed",
      *MAIN_ARGS,
  ]
  assert [a.decode() for a in args] == one + one
  assert "attempt 0" in log.read_text() and "attempt 1" not in log.read_text()


def test_tpu_pod_stops_the_previous_run_first(tmp_path):
  """A second launch SIGTERMs the first run's process group (the trainer
  saves and exits) before it starts, so the TPU is free."""
  pids = tmp_path / "pids"
  script = f'echo $$ >> {pids}; trap "exit 0" TERM; sleep 300 & wait'
  home, env = _worker(tmp_path, script)
  command = _remote_command("--restarts=0")
  subprocess.run(["bash", "-c", command], cwd=home, env=env, check=True)
  assert _wait_for(lambda: pids.exists() and pids.read_text().strip())
  first = int(pids.read_text().split()[0])
  subprocess.run(["bash", "-c", command], cwd=home, env=env, check=True)
  assert _wait_for(lambda: len(pids.read_text().split()) == 2)
  assert _wait_for(lambda: not pathlib.Path(f"/proc/{first}").exists())
  second = int(pids.read_text().split()[1])
  stubs = (tmp_path / "stubs").read_text()
  assert "pkill -f" in stubs and "sudo rm -f /tmp/libtpu_lockfile" in stubs
  # Leave nothing running: stop the second run the same way.
  pg = int((home / "routing-jax" / "train.pid").read_text())
  os.killpg(pg, 15)
  assert _wait_for(lambda: not pathlib.Path(f"/proc/{second}").exists())


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
