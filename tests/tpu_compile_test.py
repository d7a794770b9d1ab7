# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The dry run measured by the TPU compiler (libtpu, no TPU needed).

libtpu describes a TPU slice of any size on a machine without one, and
jit(...).lower(...).compile() for its devices runs the TPU compiler. These
tests skip where libtpu is not installed (`pip install -e ".[tpu]"`; the
test extra installs it).
"""

import importlib.util
import pathlib
import re
import subprocess
import sys

import pytest

from routing_jax import dryrun
from routing_jax.training import hardware

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None, reason="libtpu not installed"
)
ROOT = pathlib.Path(__file__).parents[1]


@pytest.mark.parametrize(
    "spec,count,kind",
    [
        ("tpu_v3_32", 32, "TPU v3"),  # the paper's slice: 16 chips, 2 cores
        ("tpu_v4_8", 8, "TPU v4"),  # megacore: one device per chip
        ("tpu_v5p_256", 256, "TPU v5"),
        ("tpu_v6e_256", 256, "TPU v6 lite"),
    ],
)
def test_libtpu_builds_the_named_slice(spec, count, kind, monkeypatch):
  # Set here so that the dry run's defaults do not leak into other tests.
  monkeypatch.setenv("TPU_ACCELERATOR_TYPE", "v3-8")
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "localhost")
  monkeypatch.setenv("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  devices = dryrun.tpu_devices(hardware.parse(spec))
  assert len(devices) == count
  assert {d.device_kind for d in devices} == {kind}
  assert {d.platform for d in devices} == {"tpu"}


def _dryrun(*args):
  return subprocess.run(
      [sys.executable, "-m", "routing_jax.dryrun", *args],
      capture_output=True,
      text=True,
      timeout=300,
      check=True,
      cwd=ROOT,
  )


def test_dryrun_compiles_every_step_with_the_tpu_compiler():
  """A tiny model with a routing warm-up on a v3-8: the compiler line, the
  train, warm-up, eval and decode steps, FLOPs, the reserve and the verdict,
  with no libtpu start-up noise on stderr."""
  result = _dryrun(
      "--config=experiments/shakespeare.py:tiny",
      "--config.hardware=tpu_v3_8",
      "--config.model.routing.warmup_steps=10",
  )
  lines = result.stdout.strip().splitlines()
  version = dryrun.libtpu_version()
  assert f"compiler: TPU v3 (8 devices, libtpu {version})" in lines
  assert (
      "mesh: {'data': 8, 'fsdp': 1, 'tensor': 1} over 8 devices (TPU v3)"
      in (lines)
  )
  memory = (
      r"arguments [\d.]+ GiB, temporaries [\d.]+ GiB, outputs [\d.]+ GiB,"
      r" donated [\d.]+ GiB"
  )
  for step in ("train", "warm-up", "eval", "decode"):
    assert any(
        re.fullmatch(f"compiled {step} step per device: {memory}", l)
        for l in lines
    ), (step, result.stdout)
  flops = next(l for l in lines if l.startswith("train step FLOPs"))
  compiler, analytic = map(float, re.findall(r"\d\.\d+e[+-]\d+", flops))
  assert compiler > 0 and analytic > 0
  assert lines[-2] == (
      "usable per device: 15.48 GiB (16.0 GiB HBM less 0.52 GiB for the"
      " runtime: the TPU compiler's available HBM)"
  )
  assert re.fullmatch(
      r"fits tpu_v3_8: yes \(0\.\d\d GiB of 15\.5 GiB per device\)", lines[-1]
  ), lines[-1]
  assert "host bounds" not in result.stderr
  assert "INVALID_ARGUMENT" not in result.stderr


def test_tpu_compiler_says_no_when_the_step_does_not_fit():
  """The tiny model with 2^17 sequences per v2 core: the TPU compiler
  refuses the train step, and its reason is the verdict."""
  lines = _dryrun(
      "--config=experiments/shakespeare.py:tiny",
      "--config.hardware=tpu_v2_8",
      f"--config.data.batch_size={8 * 2**17}",
  ).stdout.splitlines()
  assert any(l.startswith("compiler: TPU v2 (8 devices, libtpu") for l in lines)
  oom = (
      r"Ran out of memory on HBM, the total memory required for HLO"
      r" temporaries \([\d.]+G\) exceeds available HBM \(7\.48G\)\."
  )
  assert any(
      re.fullmatch(f"compiled train step per device: does not fit: {oom}", l)
      for l in lines
  ), lines
  assert re.fullmatch(
      f"fits tpu_v2_8: no \\(the compiler ran out of memory: {oom}\\)",
      lines[-1],
  ), lines[-1]
