# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""Long-context language modelling on the embedded corpus, several seeds.

Trains `experiments/shakespeare.py:long,variant=V` (sequences of 2048
bytes) for each attention variant V (routing, local, full; equal parameter
counts) and each seed, through the main entry point, one process per run,
and reports the final validation bits/byte as mean ± spread per variant.

  python benchmarks/long_context_lm.py --variants=routing,local,full \
      --seeds=0,1,2 --out=benchmarks/results/long_context_lm

Single runs mislead here: differences between variants are of the same
size as the seed-to-seed spread, so every variant gets the same seeds.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FINAL = re.compile(r"final validation bits_per_byte: ([0-9.]+)")
PARAMS = re.compile(r"parameters: ([0-9,]+)")


def run_one(variant, seed, args, workdir):
  cmd = [
      sys.executable,
      "-m",
      "routing_jax.main",
      f"--config=experiments/shakespeare.py:long,variant={variant}",
      f"--workdir={workdir}",
      f"--config.train.seed={seed}",
      "--nosample",
  ] + list(args.extra)
  t0 = time.time()
  proc = subprocess.run(
      cmd,
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=args.timeout,
      check=False,
  )
  wall = time.time() - t0
  found = FINAL.findall(proc.stdout)
  if proc.returncode or not found:
    tail = (proc.stdout + proc.stderr)[-2000:]
    raise RuntimeError(f"{variant} seed {seed} failed:\n{tail}")
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    rows = [json.loads(line) for line in f if line.strip()]
  curve = [
      (r["step"], r["eval/bits_per_byte"])
      for r in rows
      if "eval/bits_per_byte" in r
  ]
  return {
      "variant": variant,
      "seed": seed,
      "bits_per_byte": float(found[-1]),
      "wall_s": round(wall, 1),
      "eval_curve": curve,
      "command": " ".join(cmd[1:]),
  }


def summarize(rows):
  out = {}
  for variant in dict.fromkeys(r["variant"] for r in rows):
    vals = [r["bits_per_byte"] for r in rows if r["variant"] == variant]
    out[variant] = {
        "mean": statistics.mean(vals),
        "spread": (max(vals) - min(vals)) / 2,
        "stdev": statistics.stdev(vals) if len(vals) > 1 else 0.0,
        "runs": vals,
        "wall_s": [r["wall_s"] for r in rows if r["variant"] == variant],
    }
  return out


def table(summary):
  lines = [
      (
          "| variant | validation bits/byte (mean ± half-range) | runs | "
          "wall time per run (s) |"
      ),
      "|---|---|---|---|",
  ]
  for variant, s in summary.items():
    runs = ", ".join(f"{v:.3f}" for v in s["runs"])
    walls = ", ".join(f"{w:.0f}" for w in s["wall_s"])
    lines.append(
        f"| {variant} | {s['mean']:.3f} ± {s['spread']:.3f} | "
        f"{runs} | {walls} |"
    )
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--variants", default="routing,local,full")
  p.add_argument("--seeds", default="0,1,2")
  p.add_argument("--timeout", type=int, default=3600)
  p.add_argument("--out", default="")
  p.add_argument("extra", nargs="*", help="more flags for routing_jax.main")
  args = p.parse_args(argv)
  rows = []
  for seed in [int(s) for s in args.seeds.split(",")]:
    for variant in args.variants.split(","):
      with tempfile.TemporaryDirectory() as workdir:
        row = run_one(variant, seed, args, workdir)
      print(json.dumps(row), flush=True)
      rows.append(row)
      if args.out:  # after every run, so an interrupted sweep keeps its rows
        write_results(rows, args.out)
  summary = summarize(rows)
  print(table(summary))
  return summary


def write_results(rows, out):
  summary = summarize(rows)
  os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
  with open(out + ".json", "w", encoding="utf-8") as f:
    json.dump({"runs": rows, "summary": summary}, f, indent=1)
  with open(out + ".md", "w", encoding="utf-8") as f:
    f.write(table(summary) + "\n")


if __name__ == "__main__":
  main()
