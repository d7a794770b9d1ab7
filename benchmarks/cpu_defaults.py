# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The CPU defaults, measured: float32 or bfloat16, YNNPACK matmuls or not,
and the dense layers' weight-gradient orientation (routing_jax/nn/dense_dot.py).

model.dtype="bfloat16" runs matmuls and activations in bf16 (parameters,
optimizer state, softmax, routing scores, k-means and the loss stay
float32); `--xla_cpu_experimental_ynn_fusion_type=dot` hands matmuls to
YNNPACK, which the CLIs turn off by default (routing_jax/xla_flags.py);
`--dots plain` also times each setting with JAX's own dense backward (the
library's dense_dot replaced by lax.dot_general in the child process).
Two measurements, the variants interleaved:

  speed    seconds per training step (the library's train step: loss,
           grads, k-means update, Adam) of the peer benchmark's model
           (peer_workers.ours_config) at the shapes in --shapes, for each
           (dtype, matmul backend), each point in its own child process,
           --rounds rounds, the fastest round kept;
  quality  `python -m routing_jax.main --config=experiments/shakespeare.py:
           small` (200 steps) in each dtype for each seed in --seeds: the
           final validation bits/byte and the wall time.

  python benchmarks/cpu_defaults.py --out benchmarks/results/cpu_defaults
  python benchmarks/cpu_defaults.py --dtypes float32 --backends eigen \
      --dots library,plain --skip-quality --out results/cpu_dense_orientation

Writes <out>.json (machine, every round and run) and prints a table.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import machine  # pylint: disable=g-import-not-at-top,wrong-import-position

DTYPES = ("float32", "bfloat16")
# Matmul backend: the CLIs' default (Eigen), or YNNPACK for dots.
BACKENDS = {
    "eigen": "",
    "ynn_dot": "--xla_cpu_experimental_ynn_fusion_type=dot",
}
# name: (layers, d_model, heads, n, batch)
SHAPES = {
    "peer_6x512_n1024_b1": (6, 512, 8, 1024, 1),
    "mid_4x256_n1024_b8": (4, 256, 4, 1024, 8),
}

_STEP = r"""
import json, sys, time
sys.path.insert(0, {here!r})
from routing_jax import xla_flags
xla_flags.apply_cpu_defaults()
import jax
import peer_workers
spec = json.loads({spec!r})
if spec["dots"] == "plain":  # JAX's own transpose rule for every dense dot
  from jax import lax
  from routing_jax.nn import dense_dot
  dense_dot.dense_dot_general = lambda l, r, dims, precision=None, preferred_element_type=None: lax.dot_general(l, r, dims, precision=precision, preferred_element_type=preferred_element_type)
_, step, state, batch = peer_workers.ours_train_setup(spec, spec["n"], spec["batch"])
state, m = step(state, batch)
jax.block_until_ready(m)
times = []
for _ in range(spec["steps"]):
  t0 = time.perf_counter()
  state, m = step(state, batch)
  jax.block_until_ready(m)
  times.append(time.perf_counter() - t0)
print(json.dumps(dict(times=times, loss=float(m["loss"]))))
"""


def step_point(
    shape: str, dtype: str, backend: str, steps: int, dots: str = "library"
) -> dict:
  layers, d, heads, n, b = SHAPES[shape]
  spec = dict(
      layers=layers,
      d_model=d,
      heads=heads,
      d_ff=4 * d,
      position="rope",
      n=n,
      batch=b,
      dtype=dtype,
      steps=steps,
      dots=dots,
  )
  code = _STEP.format(here=HERE, spec=json.dumps(spec))
  out = subprocess.run(
      [sys.executable, "-c", code],
      capture_output=True,
      text=True,
      check=True,
      cwd=ROOT,
      env=dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=BACKENDS[backend]),
  )
  return json.loads(out.stdout.strip().splitlines()[-1])


def quality_run(dtype: str, seed: int) -> dict:
  with tempfile.TemporaryDirectory() as workdir:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "routing_jax.main",
            "--config=experiments/shakespeare.py:small",
            f"--workdir={workdir}",
            f"--config.model.dtype={dtype}",
            f"--config.train.seed={seed}",
            "--config.train.sample_length=0",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
  text = out.stdout
  bpb = re.search(r"final validation bits_per_byte: ([0-9.]+)", text)
  wall = re.search(r"training wall time: ([0-9.]+) s", text)
  return dict(bits_per_byte=float(bpb.group(1)), wall_s=float(wall.group(1)))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--shapes", default=",".join(SHAPES))
  p.add_argument("--backends", default=",".join(BACKENDS))
  p.add_argument("--dtypes", default=",".join(DTYPES))
  p.add_argument(
      "--dots",
      default="library",
      help="comma-separated: library (dense_dot's orientation), plain (JAX's)",
  )
  p.add_argument("--rounds", type=int, default=2)
  p.add_argument("--steps", type=int, default=4, help="timed steps a point")
  p.add_argument("--seeds", default="0,1")
  p.add_argument("--skip-quality", action="store_true")
  p.add_argument("--out", default="")
  args = p.parse_args(argv)
  dtypes, backends = args.dtypes.split(","), args.backends.split(",")
  dots = args.dots.split(",")
  for flag, given, known in (
      ("--dtypes", dtypes, DTYPES),
      ("--backends", backends, BACKENDS),
      ("--dots", dots, ("library", "plain")),
  ):
    if not given or set(given) - set(known):
      p.error(f"{flag} takes a comma-separated subset of {list(known)}")
  settings = [(dt, be, do) for dt in dtypes for be in backends for do in dots]
  rows = []
  for r in range(args.rounds):
    for shape in args.shapes.split(","):
      for dtype, backend, dot in settings:
        res = step_point(shape, dtype, backend, args.steps, dot)
        rows.append(
            dict(
                kind="speed",
                shape=shape,
                dtype=dtype,
                backend=backend,
                dots=dot,
                round=r,
                **res,
            )
        )
        print(json.dumps(rows[-1]), flush=True)
  if not args.skip_quality:
    for seed in [int(s) for s in args.seeds.split(",")]:
      for dtype in dtypes:
        res = quality_run(dtype, seed)
        rows.append(dict(kind="quality", dtype=dtype, seed=seed, **res))
        print(json.dumps(rows[-1]), flush=True)
  summary = {}
  name = lambda dt, be, do: f"{dt}/{be}" + ("" if do == "library" else f"/{do}")
  for shape in args.shapes.split(","):
    best = {
        name(*k): min(
            min(r["times"])
            for r in rows
            if r["kind"] == "speed"
            and (r["shape"], r["dtype"], r["backend"], r["dots"]) == (shape, *k)
        )
        for k in settings
    }
    base = best.get("float32/eigen")
    summary[shape] = {
        k: dict(step_s=v, speedup_vs_f32_eigen=base / v if base else None)
        for k, v in best.items()
    }
  quality = [r for r in rows if r["kind"] == "quality"]
  for dt in dtypes:
    runs = [r for r in quality if r["dtype"] == dt]
    if runs:
      summary[f"quality_{dt}"] = dict(
          bits_per_byte=[r["bits_per_byte"] for r in runs],
          wall_s=[r["wall_s"] for r in runs],
      )
  report = dict(machine=machine.describe(), summary=summary, rows=rows)
  print(json.dumps(summary, indent=1))
  if args.out:
    with open(args.out + ".json", "w") as f:
      json.dump(report, f, indent=1)


if __name__ == "__main__":
  main()
