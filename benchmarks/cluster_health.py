# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""Cluster health of causal routing on real text, with and without revival.

Trains the Shakespeare main-job model (experiments/shakespeare.py, with
more clusters) through the project's own trainer and records, every few
steps, the k-means health of the training batch (averaged over routing
layers and heads): assignment entropy (nats; log k when balanced), the
fraction of empty clusters and the largest cluster's share. At the end it
measures the same on held-out validation text, per layer and head.

Settings compared (everything else equal, same seeds):
  random     random initial centroids, no revival (prior count 1, argmax
             assignment: the behaviour before data init and revival)
  data+revive  centroids drawn from the first batch, dead clusters re-seeded

Run:
  python benchmarks/cluster_health.py --steps=300 --seeds=0,1 \
      --out=benchmarks/results/cluster_health
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import machine  # pylint: disable=g-import-not-at-top,wrong-import-position

SETTINGS = {
    "random": dict(data_init=False, revive_threshold=0.0),
    "data+revive": dict(data_init=True, revive_threshold=0.05),
}


def health(counts):
  """counts [..., k] -> (entropy, empty fraction, max share) per row."""
  counts = np.asarray(counts, np.float64)
  p = counts / np.maximum(counts.sum(-1, keepdims=True), 1.0)
  ent = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), -1)
  return ent, (counts == 0).mean(-1), p.max(-1)


def run(setting, seed, args):
  import jax  # pylint: disable=g-import-not-at-top
  from experiments import shakespeare  # pylint: disable=g-import-not-at-top
  from routing_jax.data import input_pipeline  # pylint: disable=g-import-not-at-top
  from routing_jax.training import sharding, train  # pylint: disable=g-import-not-at-top
  from routing_jax.nn import kmeans as km  # pylint: disable=g-import-not-at-top

  c = shakespeare.get_config()
  c.model.routing.num_clusters = args.clusters
  c.model.routing.kmeans.update(SETTINGS[setting])
  c.train.seed = seed
  c.train.steps = args.steps
  model_cfg = train.validate_config(c)
  mesh = sharding.create_mesh(
      dict(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1]
  )
  trainer, state = train.build_trainer(
      c, mesh, sharding.logical_rules(), model_cfg
  )
  data = input_pipeline.create_datasets(c.data, vocab_size=256)
  curve = []
  t0 = time.time()
  for step in range(args.steps):
    gb = sharding.make_global_batch(
        next(data.train), mesh, trainer.data_sharding
    )
    state, m = train.run_step(trainer, trainer.train_step_at(step), state, gb)
    if step % args.every == 0 or step + 1 == args.steps:
      m = jax.device_get(m)
      curve.append({
          "step": step + 1,
          "loss": float(m["loss"]),
          "entropy": float(m["kmeans/entropy"]),
          "empty_fraction": float(m["kmeans/empty_fraction"]),
          "max_share": float(m["kmeans/max_share"]),
      })
  # Held-out text: per routing layer and head, the clusters of the routing
  # vectors (LayerNorm of the routing heads' query projections; Q and K are
  # shared in this config) under the trained centroids.
  capture = jax.jit(
      lambda p, k, x: trainer.model.apply(
          {"params": p, "kmeans": k},
          x,
          capture_intermediates=lambda mdl, _: (
              mdl.name == "query"
              and getattr(mdl.parent, "name", "") == "routing"
          ),
          mutable=["intermediates"],
      )[1]["intermediates"]
  )
  heads = model_cfg.num_routing_heads
  counts = None
  for i, batch in enumerate(data.eval):
    if i >= args.eval_batches:
      break
    inter = jax.device_get(capture(state.params, state.kmeans, batch["inputs"]))
    per_layer = []
    for layer in sorted(inter, key=lambda name: int(name.split("_")[-1])):
      q = np.asarray(inter[layer]["routing"]["query"]["__call__"][0])
      b, n, _ = q.shape
      vectors = np.asarray(km.normalize(q.reshape(b, n, heads, -1)))
      mu = np.asarray(state.kmeans[layer]["routing"]["kmeans"]["centroids"])
      assign = np.einsum("bnhd,hkd->bnhk", vectors, mu).argmax(-1)
      per_layer.append(
          np.stack([
              np.bincount(assign[:, :, h].reshape(-1), minlength=args.clusters)
              for h in range(heads)
          ])
      )
    batch_counts = np.stack(per_layer)  # [layers, heads, k]
    counts = batch_counts if counts is None else counts + batch_counts
  ent, empty, share = health(counts)
  return {
      "setting": setting,
      "seed": seed,
      "steps": args.steps,
      "clusters": args.clusters,
      "train_s": round(time.time() - t0, 1),
      "curve": curve,
      "validation": {
          "entropy": float(ent.mean()),
          "entropy_max": math.log(args.clusters),
          "empty_fraction": float(empty.mean()),
          "max_share": float(share.mean()),
          "per_head_empty": empty.tolist(),
      },
      "final_train_loss": curve[-1]["loss"],
  }


def table(rows):
  lines = [
      (
          "| setting | seed | train empty (first 50 steps / last) | "
          "val entropy (max) | val empty | val largest share | train loss |"
      ),
      "|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    early = np.mean(
        [p["empty_fraction"] for p in r["curve"] if p["step"] <= 50]
    )
    v = r["validation"]
    lines.append(
        f"| {r['setting']} | {r['seed']} | {early:.3f} / "
        f"{r['curve'][-1]['empty_fraction']:.3f} | {v['entropy']:.3f} "
        f"({v['entropy_max']:.3f}) | {v['empty_fraction']:.3f} | "
        f"{v['max_share']:.3f} | {r['final_train_loss']:.3f} |"
    )
  return "\n".join(lines)


def plot(rows, path):
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
  for r in rows:
    steps = [p["step"] for p in r["curve"]]
    style = "-" if r["setting"] == "data+revive" else "--"
    for ax, key in zip(axes, ("entropy", "empty_fraction", "max_share")):
      ax.plot(
          steps,
          [p[key] for p in r["curve"]],
          style,
          label=f"{r['setting']} seed {r['seed']}",
      )
      ax.set_title(key.replace("_", " "))
      ax.set_xlabel("step")
  axes[0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--steps", type=int, default=300)
  p.add_argument("--seeds", default="0,1")
  p.add_argument("--clusters", type=int, default=8)
  p.add_argument("--every", type=int, default=10)
  p.add_argument("--eval_batches", type=int, default=8)
  p.add_argument("--settings", default=",".join(SETTINGS))
  p.add_argument("--out", default="")
  args = p.parse_args(argv)
  rows = []
  for seed in [int(s) for s in args.seeds.split(",")]:
    for setting in args.settings.split(","):
      row = run(setting, seed, args)
      print(
          json.dumps({k: v for k, v in row.items() if k != "curve"}), flush=True
      )
      row["cpu"] = machine.cpu_model()
      rows.append(row)
  print(table(rows))
  if args.out:
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".json", "w", encoding="utf-8") as f:
      json.dump(rows, f, indent=1)
    with open(args.out + ".md", "w", encoding="utf-8") as f:
      f.write(table(rows) + "\n")
    plot(rows, args.out + ".png")
  return rows


if __name__ == "__main__":
  main()
