"""Tests for the `python -m routing_jax.main` entry point (as subprocesses).

Bad configs must fail with a message naming the field before anything is
compiled: with JAX_LOG_COMPILES=1 every compilation would print
"Compiling", so its absence (and that of the workdir) proves it.
"""

import os
import pathlib
import re
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = "--config=experiments/shakespeare.py:tiny"


def _main(workdir, *args, timeout=120):
  env = dict(os.environ, JAX_LOG_COMPILES="1",
             JAX_COMPILATION_CACHE_DIR=str(ROOT / "tests" / ".jax_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")
  start = time.monotonic()
  result = subprocess.run(
      [sys.executable, "-m", "routing_jax.main", f"--workdir={workdir}",
       *args], cwd=ROOT, env=env, capture_output=True, text=True,
      timeout=timeout, check=False)
  return result, time.monotonic() - start


@pytest.mark.parametrize("args, message", [
    ((TINY, "--config.train.lr_typo=1"),
     "Invalid config override --config.train.lr_typo: the config has no"
     " field 'lr_typo'."),
    ((TINY, "--config.trian.lr=1"),
     "the config has no field 'trian' (did you mean 'train'?)"),
    ((TINY, "--config.model.num_heads=3"),
     "Invalid config: model.num_heads=3: must divide model.d_model=32"),
    ((TINY, "--config.train.lr=-1"), "Invalid config: train.lr=-1.0:"
     " must be > 0"),
    ((TINY, "--config.train.lr=fast"), "flag --config.train.lr=fast:"),
    (("--config=experiments/shakespeare.py:tiny,bogus",),
     "config arg: unknown key 'bogus'"),
    ((TINY, "--config.mesh.tensor=3"), "mesh.tensor=3 does not divide 8"),
])
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
  result, _ = _main(
      tmp_path, TINY, "--config.train.schedule=rsqrt",
      "--config.train.warmup_steps=2", "--config.train.steps=3",
      "--config.train.checkpoint_every=8", timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  out = result.stdout
  steps = re.findall(r"^step (\d)/3 \| bits_per_byte [\d.]+ \| "
                     r"[\d.]+k tok/s \| [\d.]+ s/step \| \S+ TFLOP/s/device "
                     r"\| lr \S+ \| ETA \d+m\d\ds$", out, re.M)
  assert steps == ["1", "2", "3"]
  assert re.search(r"^eval at step 3: loss_nats [\d.]+, bits_per_byte", out,
                   re.M)
  final = re.search(r"^final validation bits_per_byte: ([\d.]+) \(over "
                    r"(\d+) tokens\)$", out, re.M)
  assert final and 6.0 < float(final.group(1)) < 8.5  # Nearly untrained.
  assert "unigram baseline validation bits_per_byte: 4.83" in out
  png = re.search(r"^loss curve: (\S+)$", out, re.M).group(1)
  assert pathlib.Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert out.split("sample:\n", 1)[1].startswith("HAMLET:\n")
  assert (tmp_path / "checkpoints" / "3").is_dir()  # The final save.
  assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 4
