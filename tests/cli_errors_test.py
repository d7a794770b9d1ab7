# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""A user's mistake costs one line: every CLI, before any restore or compile.

Each case runs a tool as the user would (a subprocess: absl flags are
global) and checks a non-zero exit, no traceback, a last stderr line that
names what to change, and that nothing was compiled (JAX_LOG_COMPILES). None
of them needs a trained checkpoint: the checks come first.
"""

import errno
import json
import os
import pathlib
import subprocess
import sys

import pytest

from experiments import shakespeare
from routing_jax import cli
from routing_jax import cli_checks
from routing_jax import errors
from routing_jax.training import checkpointing
from routing_jax.training import workdir as workdir_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = "--config=experiments/shakespeare.py:tiny"


def _tool(module, *args):
  env = dict(os.environ, JAX_LOG_COMPILES="1", JAX_PLATFORMS="cpu")
  return subprocess.run(
      [sys.executable, "-m", f"routing_jax.{module}", *args],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=120,
      check=False,
  )


def _causal_workdir(tmp_path):
  """A workdir as training leaves it, as far as the checks read it."""
  return workdir_lib.create(tmp_path / "run", shakespeare.get_config("tiny"))


def _cases(tmp_path):
  run = _causal_workdir(tmp_path)
  sample = ("sample", TINY, f"--workdir={run}")
  return {
      "num_samples_0": (
          (*sample, "--num_samples=0"),
          "flag --num_samples=0: 0 is not a positive integer",
      ),
      "negative_temperature": (
          (*sample, "--temperature=-1"),
          "flag --temperature=-1: -1.0 is not a non-negative number",
      ),
      "top_p_0": ((*sample, "--top_p=0"), "--top_p must be in (0, 1]"),
      "top_p_2": ((*sample, "--top_p=2"), "--top_p must be in (0, 1]"),
      "negative_length": (
          (*sample, "--length=-1"),
          "flag --length=-1: -1 is not a positive integer",
      ),
      "negative_top_k": (
          (*sample, "--top_k=-1"),
          "flag --top_k=-1: -1 is not a non-negative integer",
      ),
      "sample_other_model": (
          (*sample, "--config.model.routing.mode=topk"),
          "model.routing.mode='topk' (trained with 'causal')",
      ),
      "evaluate_other_model": (
          (
              "evaluate",
              TINY,
              f"--workdir={run}",
              "--config.model.routing.mode=topk",
          ),
          "model.routing.mode='topk' (trained with 'causal')",
      ),
      "negative_max_batches": (
          ("evaluate", TINY, f"--workdir={run}", "--max_batches=-1"),
          "flag --max_batches=-1: -1 is not a non-negative integer",
      ),
      "unknown_scheme": (
          ("main", TINY, "--workdir=foo://bucket/run"),
          "Invalid workdir: foo://bucket/run: unknown URL scheme foo://",
      ),
      "unknown_config_arg": (
          ("main", TINY + "y", f"--workdir={tmp_path}/x"),
          "Invalid --config: ValueError: config arg: unknown key 'tinyy'",
      ),
      "mesh_too_big": (
          ("main", TINY, "--config.mesh.data=3", f"--workdir={tmp_path}/x"),
          (
              "Invalid config: mesh.data=3 does not divide 8 devices. Set"
              " --config.mesh.data/fsdp/tensor"
          ),
      ),
      "dryrun_negative_devices": (
          ("dryrun", TINY, "--devices=-1"),
          "flag --devices=-1: -1 is not a non-negative integer",
      ),
      "build_unknown_name": (
          ("data.datasets.build", "--name=nosuch", f"--data_dir={tmp_path}"),
          (
              "--name=nosuch: no such dataset; use one of enwik8, wikitext103,"
              " text_files"
          ),
      ),
      "build_missing_archive": (
          (
              "data.datasets.build",
              "--name=enwik8",
              f"--data_dir={tmp_path}",
              f"--manual_dir={tmp_path}/none",
          ),
          "Invalid data: enwik8.zip not found in the manual directory",
      ),
  }


@pytest.mark.parametrize(
    "case",
    [
        "num_samples_0",
        "negative_temperature",
        "top_p_0",
        "top_p_2",
        "negative_length",
        "negative_top_k",
        "sample_other_model",
        "evaluate_other_model",
        "negative_max_batches",
        "unknown_scheme",
        "unknown_config_arg",
        "mesh_too_big",
        "dryrun_negative_devices",
        "build_unknown_name",
        "build_missing_archive",
    ],
)
def test_mistakes_are_one_line_before_any_work(tmp_path, case):
  args, message = _cases(tmp_path)[case]
  saved = (tmp_path / "run" / "config.json").read_text()
  result = _tool(*args)
  assert result.returncode != 0
  assert "Traceback" not in result.stderr, result.stderr[-2000:]
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  # absl's flag errors add "Pass --helpshort ..." after the line.
  assert message in "\n".join(lines[-2:]), result.stderr[-2000:]
  assert "Compiling" not in result.stdout + result.stderr
  assert not (tmp_path / "run" / "checkpoints").exists()
  # Read-only tools write nothing, the lock file included.
  assert (tmp_path / "run" / "config.json").read_text() == saved
  assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json"]


def test_gs_without_gcsfs_is_one_line(tmp_path):
  try:
    import gcsfs  # pylint: disable=g-import-not-at-top,unused-import

    pytest.skip("gcsfs is installed")
  except ImportError:
    pass
  result = _tool("main", TINY, "--workdir=gs://bucket/run")
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert result.stderr.splitlines()[-1] == (
      "Invalid workdir: gs://bucket/run: Please install gcsfs to access"
      " Google Storage (pip install gcsfs for gs://, s3fs for s3://)"
  )


def test_describe_gives_one_line_for_what_the_user_can_fix():
  hash_error = errors.ConfigError("checkpoint step 3 ... use a new workdir.")
  assert isinstance(hash_error, ValueError)  # What train_loop raised before.
  assert cli.describe(hash_error).startswith("Invalid config: checkpoint")
  restore = checkpointing.CheckpointRestoreError("None of the 2 checkpoints")
  assert cli.describe(restore) == "Cannot restore: None of the 2 checkpoints"
  # A full disk, raised directly or wrapped (tensorstore's text).
  full = OSError(errno.ENOSPC, "No space left on device", "/w/metrics.jsonl")
  assert cli.describe(full).startswith("Disk full writing /w/metrics.jsonl (")
  try:
    try:
      raise full
    except OSError as e:
      raise RuntimeError("flush failed") from e
  except RuntimeError as wrapped:
    assert cli.describe(wrapped).startswith("Disk full (flush failed)")
  tensorstore = ValueError(
      'RESOURCE_EXHAUSTED: Failed writing: "x": [OS error'
      " 28: No space left on device]"
  )
  assert cli.describe(tensorstore).startswith("Disk full (RESOURCE_EXHAUSTED")
  for line in map(cli.describe, (hash_error, restore, full, tensorstore)):
    assert "\n" not in line
  # Bugs keep their traceback.
  assert cli.describe(ValueError("shapes differ")) is None
  assert cli.describe(KeyError("x")) is None


def test_sample_output_folder_is_made_before_sampling(tmp_path):
  out = tmp_path / "new" / "deeper" / "sample.txt"
  cli_checks.prepare_output_file(str(out), is_image=False)
  assert out.parent.is_dir() and not out.exists()
  with pytest.raises(errors.UserInputError, match="must name a .png"):
    cli_checks.prepare_output_file(str(tmp_path / "x.txt"), is_image=True)
  blocker = tmp_path / "file"
  blocker.write_text("")
  with pytest.raises(errors.UserInputError, match="cannot create its folder"):
    cli_checks.prepare_output_file(str(blocker / "x.txt"), is_image=False)
  with pytest.raises(errors.UserInputError, match="cannot write a file"):
    cli_checks.prepare_output_file(str(tmp_path), is_image=False)
