# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Tests for the `python -m routing_jax.main` entry point (as subprocesses).

Bad configs must fail with a message naming the field before anything is
compiled: with JAX_LOG_COMPILES=1 every compilation would print
"Compiling", so its absence (and that of the workdir) proves it.
"""

import json
import os
import pathlib
import re
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = "--config=experiments/shakespeare.py:tiny"


CACHE = ROOT / "tests" / ".jax_cache"


def _main(workdir, *args, timeout=120, **env_overrides):
  env = dict(
      os.environ,
      JAX_LOG_COMPILES="1",
      JAX_COMPILATION_CACHE_DIR=str(CACHE),
      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
  )
  env.update(env_overrides)
  env = {k: v for k, v in env.items() if v is not None}
  start = time.monotonic()
  result = subprocess.run(
      [sys.executable, "-m", "routing_jax.main", f"--workdir={workdir}", *args],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=timeout,
      check=False,
  )
  return result, time.monotonic() - start


@pytest.mark.parametrize(
    "args, message",
    [
        (
            (TINY, "--config.train.lr_typo=1"),
            (
                "Invalid config override --config.train.lr_typo: the config has"
                " no field 'lr_typo'."
            ),
        ),
        (
            (TINY, "--config.trian.lr=1"),
            "the config has no field 'trian' (did you mean 'train'?)",
        ),
        (
            (TINY, "--config.model.num_heads=3"),
            "Invalid config: model.num_heads=3: must divide model.d_model=32",
        ),
        (
            (TINY, "--config.train.lr=-1"),
            "Invalid config: train.lr=-1.0: must be > 0",
        ),
        ((TINY, "--config.train.lr=fast"), "flag --config.train.lr=fast:"),
        (
            ("--config=experiments/shakespeare.py:tiny,bogus",),
            "config arg: unknown key 'bogus'",
        ),
        ((TINY, "--config.mesh.tensor=3"), "mesh.tensor=3 does not divide 8"),
    ],
)
def test_bad_config_fails_before_compiling(tmp_path, args, message):
  workdir = tmp_path / "run"
  result, seconds = _main(workdir, *args)
  assert result.returncode != 0
  assert message in result.stderr
  assert "Compiling" not in result.stdout + result.stderr
  assert not workdir.exists()
  assert seconds < 60  # Import time only (a few seconds when idle).


def test_missing_required_flag(tmp_path):
  result, _ = _main(tmp_path)
  assert result.returncode != 0
  assert "--config" in result.stderr


@pytest.mark.slow
def test_tiny_run_prints_progress_report_and_sample(tmp_path):
  # The cache comes from the flag only; every lookup in it is logged (hits
  # with JAX_LOG_COMPILES, misses with JAX_EXPLAIN_CACHE_MISSES).
  result, _ = _main(
      tmp_path,
      TINY,
      "--config.train.schedule=rsqrt",
      "--config.train.warmup_steps=2",
      "--config.train.steps=3",
      "--config.train.checkpoint_every=8",
      "--profile",
      "--profile_steps=1",
      f"--compilation_cache_dir={CACHE}",
      timeout=300,
      JAX_COMPILATION_CACHE_DIR=None,
      JAX_EXPLAIN_CACHE_MISSES="1",
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert re.search(
      r"Persistent compilation cache hit for 'jit_train_step'|"
      r"PERSISTENT COMPILATION CACHE MISS for 'jit_train_step'",
      result.stderr,
  )
  # The config and a trace of step 2 are in the workdir.
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["train"]["steps"] == 3 and saved["model"]["d_model"] == 32
  trace = list((tmp_path / "profile").rglob("*.xplane.pb"))
  assert len(trace) == 1 and trace[0].stat().st_size > 0
  out = result.stdout
  steps = re.findall(
      r"^step (\d)/3 \| bits_per_byte [\d.]+ \| "
      r"[\d.]+k tok/s \| [\d.]+ s/step \| \S+ TFLOP/s/device "
      r"\| lr \S+ \| ETA \d+m\d\ds$",
      out,
      re.M,
  )
  assert steps == ["1", "2", "3"]
  assert re.search(
      r"^eval at step 3: loss_nats [\d.]+, bits_per_byte", out, re.M
  )
  final = re.search(
      r"^final validation bits_per_byte: ([\d.]+) \(over " r"(\d+) tokens\)$",
      out,
      re.M,
  )
  assert final and 6.0 < float(final.group(1)) < 8.5  # Nearly untrained.
  assert "unigram baseline validation bits_per_byte: 4.83" in out
  png = re.search(r"^loss curve: (\S+)$", out, re.M).group(1)
  assert pathlib.Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert out.split("sample:\n", 1)[1].startswith("HAMLET:\n")
  assert (tmp_path / "checkpoints" / "3").is_dir()  # The final save.
  assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 4
  # evaluate and sample need the workdir alone (the run's config.json);
  # evaluate prints its JSON and nothing else: no Orbax chatter about the
  # read-only restore.
  tool = lambda module, *args: subprocess.run(
      [sys.executable, "-m", module, f"--workdir={tmp_path}", *args],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )
  ev = tool("routing_jax.evaluate")
  assert ev.returncode == 0 and ev.stderr == "", ev.stderr[-2000:]
  assert json.loads(ev.stdout)["step"] == 3
  sample = tool("routing_jax.sample", "--prompt=ROMEO:", "--length=5")
  assert sample.returncode == 0, sample.stderr[-2000:]
  assert sample.stdout.startswith("ROMEO:") and len(sample.stdout) >= 11


def _write(path, data: bytes):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(data)


def _user_error_cases(tmp_path):
  """(args, the last line stderr must end with) per expected user error."""
  texts = tmp_path / "texts"
  for name, data in (
      ("a.txt", b"a\n"),
      ("b.txt", b"b\n"),
      ("c.txt", b""),
      ("d.txt", b"d\n"),
  ):
    _write(texts / name, data)
  blocker = tmp_path / "a_file"
  _write(blocker, b"not a directory")
  text_files = (
      "--config.data.name=text_files",
      f"--config.data.data_dir={tmp_path / 'tfds'}",
  )
  return {
      "no_match": (
          (*text_files, f"--config.data.text_files={tmp_path}/none/*.txt"),
          (
              f"Invalid data: data.text_files pattern '{tmp_path}/none/*.txt'"
              " matched no files"
          ),
      ),
      "empty_file": (
          (*text_files, f"--config.data.text_files={texts}/*.txt"),
          (
              f"Invalid data: text file {texts}/c.txt is empty; remove it or"
              " fill it"
          ),
      ),
      "unwritable_workdir": (
          (f"--workdir={blocker}/run",),
          (
              f"Invalid workdir: cannot write to the workdir {blocker}/run:"
              " NotADirectoryError: [Errno 20] Not a directory:"
              f" '{blocker}/run'"
          ),
      ),
  }


@pytest.mark.parametrize(
    "case", ["no_match", "empty_file", "unwritable_workdir"]
)
def test_user_errors_are_one_line(tmp_path, case):
  args, last_line = _user_error_cases(tmp_path)[case]
  # A later --workdir overrides the first one.
  result, _ = _main(tmp_path / "run", TINY, *args)
  assert result.returncode != 0
  assert "Traceback" not in result.stderr
  # The line may follow TFDS's progress-bar control characters.
  assert result.stderr.splitlines()[-1].endswith(last_line), result.stderr
  assert "Compiling" not in result.stdout + result.stderr
