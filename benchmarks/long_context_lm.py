# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""Long-context language modelling on the embedded corpus, several seeds.

Trains `experiments/shakespeare.py:long,variant=V` (sequences of 2048
bytes) for each attention variant V (below) and each seed, through the
main entry point, one process per run, and reports the final validation
bits/byte as mean ± spread per variant.

  python benchmarks/long_context_lm.py \
      --variants=routing,local,hybrid,full,routing_default \
      --seeds=0,1,2 --out=benchmarks/results/long_context_lm

Single runs mislead here: differences between variants are of the same
size as the seed-to-seed spread, so every variant gets the same seeds.

Overall bits/byte hides where routing can help, so each run's final model
is also scored on the same validation windows split by where the
information is: "long-range" bytes, whose preceding 8 bytes last occurred
in the same sequence farther back than the local heads reach (256 bytes),
and all other bytes. Variants: routing (the content preset), local, full,
hybrid (the routing variant with its routing heads made plain dense heads)
and routing_default (routing heads with the library's defaults).
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

sys.path.insert(0, ROOT)
from benchmarks import machine  # pylint: disable=g-import-not-at-top,wrong-import-position


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
  split = score_split(variant, seed, workdir, args.extra)
  return {
      "variant": variant,
      "seed": seed,
      "bits_per_byte": float(found[-1]),
      **split,
      "wall_s": round(wall, 1),
      "cpu": machine.cpu_model(),
      "eval_curve": curve,
      "command": " ".join(cmd[1:]),
  }


def long_range_tokens(inputs, ngram, reach):
  """[batch, length] bool: the byte predicted at t follows an n-gram whose
  previous occurrence in the same row ends more than `reach` back.

  inputs are the right-shifted bytes (inputs[t] = target[t - 1]), so the
  n-gram before target t is inputs[t - ngram + 1 .. t]. With the nearest
  earlier occurrence ending at s < t, the byte that followed it sits t - s
  back: beyond the local heads when t - s > reach.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top

  inputs = np.asarray(inputs)
  out = np.zeros(inputs.shape, bool)
  for b, row in enumerate(inputs):
    last = {}
    for t in range(ngram - 1, len(row)):
      gram = row[t - ngram + 1 : t + 1].tobytes()
      s = last.get(gram)
      out[b, t] = s is not None and t - s > reach
      last[gram] = t
  return out


def split_bits(logits, batch, far):
  """(bits/byte on far targets, on the others, far share of the weight)."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  logits = np.asarray(logits, np.float64)
  top = logits.max(-1, keepdims=True)
  logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
  nll = -np.take_along_axis(logp, batch["targets"][..., None], -1)[..., 0]
  w = np.asarray(batch["weights"], np.float64)
  sums = {}
  for name, sel in (("far", far), ("near", ~far)):
    sums[name] = (float(np.sum(nll * w * sel)), float(np.sum(w * sel)))
  return sums


def _apply_overrides(config, flags):
  """Applies "--config.a.b=value" flags (the run's extra flags) to config."""
  for flag in flags:
    if not flag.startswith("--config."):
      continue
    path, _, text = flag[len("--config.") :].partition("=")
    *parents, leaf = path.split(".")
    node = config
    for name in parents:
      node = node[name]
    node[leaf] = type(node[leaf])(text) if node[leaf] is not None else text


def score_split(variant, seed, workdir, flags=(), ngram=8, reach=256):
  """The final model of a run, scored on the validation windows of its
  final evaluation (the run's own flags applied), split into long-range
  bytes and the rest."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  sys.path.insert(0, ROOT)
  from experiments import shakespeare  # pylint: disable=g-import-not-at-top
  from routing_jax import inference  # pylint: disable=g-import-not-at-top

  config = shakespeare.get_config(f"long,variant={variant}")
  config.train.seed = seed
  _apply_overrides(config, flags)
  trainer, state, datasets, _ = inference.restore(config, workdir)
  model = trainer.model
  variables = inference.host_variables(state)
  forward = jax.jit(lambda v, x: model.apply(v, x)[0])
  totals = {"far": [0.0, 0.0], "near": [0.0, 0.0]}
  for i, batch in enumerate(datasets.eval):
    if i >= config.train.eval_batches:
      break
    batch = jax.device_get(batch)
    far = long_range_tokens(batch["inputs"], ngram, reach)
    for name, (nats, weight) in split_bits(
        forward(variables, batch["inputs"]), batch, far
    ).items():
      totals[name][0] += nats
      totals[name][1] += weight
  bits = lambda name: totals[name][0] / max(totals[name][1], 1.0) / np.log(2)
  weight = totals["far"][1] + totals["near"][1]
  return {
      "far_bits_per_byte": bits("far"),
      "near_bits_per_byte": bits("near"),
      "far_share": totals["far"][1] / max(weight, 1.0),
  }


def summarize(rows):
  out = {}
  for variant in dict.fromkeys(r["variant"] for r in rows):
    vals = [r["bits_per_byte"] for r in rows if r["variant"] == variant]
    part = lambda key: statistics.mean(
        [r[key] for r in rows if r["variant"] == variant]
    )
    out[variant] = {
        "far": part("far_bits_per_byte"),
        "near": part("near_bits_per_byte"),
        "far_share": part("far_share"),
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
          "long-range bytes | other bytes | long-range share | "
          "wall time per run (s) |"
      ),
      "|---|---|---|---|---|---|---|",
  ]
  for variant, s in summary.items():
    runs = ", ".join(f"{v:.3f}" for v in s["runs"])
    walls = ", ".join(f"{w:.0f}" for w in s["wall_s"])
    lines.append(
        f"| {variant} | {s['mean']:.3f} ± {s['spread']:.3f} | "
        f"{runs} | {s['far']:.3f} | {s['near']:.3f} | "
        f"{s['far_share']:.1%} | {walls} |"
    )
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--variants", default="routing,local,full,hybrid")
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
