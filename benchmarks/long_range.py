# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""Long-range retrieval: does an attention kind fetch content beyond its window?

Trains small byte models on `routing_jax.data.synthetic_tasks` (recall: multi-
query associative recall; lookup: one-hop recall of single-token pairs;
copy: a 48-token span repeated 64 tokens later, chance 6 bits),
through the project's own `build_trainer` / `train_step`, at equal steps and
(nearly) equal parameters, 2 layers of 4 heads, d_model 64, sequences of
128 whose measured answers lie 50-100 tokens back, local span 32:

  local                 every head local (blocks of 16: up to 32 back)
  full                  every head sees the whole past (one block of 128)
  routing_causal        2 local + 2 causal routing heads per layer: separate
                        Q/K, centroids fitted to the keys, each query routed
                        to the key cluster it matches best, a window of 32
                        members, k-means decay 0.99, and a dense warm-up of
                        the routing heads for the first 500 steps
  routing_causal_nowarm the same without the warm-up
  routing_causal_random the same whose warm-up is itself sparse: causal
                        routing over random clusters drawn afresh each
                        step (each query sees a random ~window of earlier
                        tokens), at a routed step's cost
  routing_causal_warm64 the same with a dense warm-up over the last 64
                        tokens only (O(n·64)): does matching learned at
                        short range carry to farther answers?
  routing_causal_long_warm the dense warm-up for 2/3 of the steps (1,000 of
                        1,500): does what the dense phase learned late
                        survive the switch?
  routing_topk          2 local + 2 of the paper's balanced top-k routing
                        heads (shared Q/K, window 16 = n/k)
  routing_topk_aided    the same with the aids causal routing gets where they
                        apply: the dense warm-up, k-means decay 0.99, data-
                        initialised centroids and dead-cluster revival
  hybrid                2 local + 2 plain dense heads per layer
                        (model.dense_routing_heads): the routing model with
                        its sparse heads made dense, its upper bound
  hybrid_routing_dense  routing_causal whose routing heads stay in their
                        dense warm-up for the whole run (normalised Q/K,
                        the routing heads' positions): with `hybrid`, tells
                        what the routing heads' dense path lacks

A model name may carry its own step count, `full@3000`, for baselines that
are still learning when the default run ends. Top-k routing selects its
members over the whole sequence, so its accuracy is also scored causally
("causal accuracy": the answer at t from a forward over tokens 0..t only,
what generation sees).

Every routing model has k = 8 clusters. Reported per run: accuracy and bits
on the measured answers (recall: first queries of a key only), and for
causal routing the share of measured answers whose key the routing heads of
each layer can see (same cluster, inside the window).

  python benchmarks/long_range.py --seeds=0,1 \
      --out=benchmarks/results/long_range
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import machine  # pylint: disable=g-import-not-at-top,wrong-import-position

MODELS = (
    "local",
    "full",
    "routing_causal",
    "routing_causal_nowarm",
    "routing_causal_random",
    "routing_causal_warm64",
    "routing_causal_long_warm",
    "routing_topk",
    "routing_topk_aided",
    "hybrid",
    "hybrid_routing_dense",
)
SEQ_LEN, BLOCK, CLUSTERS = 128, 16, 8
TASK_ARGS = {
    "recall": dict(pairs=8, queries=16, gap=48, key_vocab=16, value_vocab=16),
    "lookup": dict(pairs=8, queries=16, gap=48, key_vocab=8, value_vocab=16),
    # The repeat lies 64 tokens after the span, twice the local reach.
    "copy": dict(span=48, gap=16, vocab=64),
}


def build_config(
    kind,
    seed,
    steps,
    warmup=500,
    *,
    seq_len=SEQ_LEN,
    d_model=64,
    block=BLOCK,
    clusters=CLUSTERS,
    window=None,
):
  """The experiment config of one attention kind (see the docstring); the
  keyword sizes let the fast test train a smaller copy."""
  from experiments import common  # pylint: disable=g-import-not-at-top

  c = common.base_config()
  m = c.model
  m.num_layers, m.d_model, m.num_heads, m.d_ff = 2, d_model, 4, 4 * d_model
  m.norm, m.position, m.residual_dropout = "pre", "relative", 0.0
  common.set_local_blocks(m, block)
  m.routing.num_clusters = clusters
  if kind in ("local", "full"):
    common.set_routing_heads(m, 0)
    if kind == "full":  # one block over everything, positions over all
      m.query_block, m.memory_flange = seq_len, 0
      m.max_relative_position = seq_len
  elif kind == "hybrid":
    common.set_routing_heads(m, 2)
    m.dense_routing_heads = True
  elif kind.startswith("routing_topk"):
    common.set_routing_heads(m, 2)
    m.routing.mode, m.routing.window = "topk", seq_len // clusters
    if kind.endswith("aided"):
      m.routing.warmup_steps = warmup
      k = m.routing.kmeans
      k.decay, k.data_init, k.revive_threshold = 0.99, True, 0.05
  else:
    common.set_routing_heads(m, 2)
    common.set_content_routing(
        m,
        window=window or 2 * block,
        warmup_steps=(
            0
            if kind.endswith("nowarm")
            else steps + 1
            if kind == "hybrid_routing_dense"
            else 2 * steps // 3
            if kind.endswith("long_warm")
            else warmup
        ),
        warmup="random" if kind.endswith("random") else "dense",
    )
    if kind.endswith("warm64"):
      m.routing.warmup_window = 64
  common.set_data(c, "synthetic", seq_len, batch_size=16)
  t = c.train
  t.optimizer, t.lr, t.schedule = "adamw", 1e-3, "cosine"
  t.warmup_steps, t.weight_decay, t.grad_clip = 100, 0.0, 1.0
  t.steps, t.seed = steps, seed
  return c


def routing_visibility(model_cfg, variables, batch, pairs):
  """Per routing layer: share of measured recall answers whose key the
  routing heads see (averaged over heads)."""
  import jax  # pylint: disable=g-import-not-at-top
  from routing_jax.nn import kmeans as km  # pylint: disable=g-import-not-at-top
  from routing_jax.data import synthetic_tasks  # pylint: disable=g-import-not-at-top
  from routing_jax.nn.model import TransformerLM  # pylint: disable=g-import-not-at-top

  names = ("query", "key")
  inter = jax.device_get(
      TransformerLM(model_cfg).apply(
          variables,
          batch["inputs"],
          mutable=["intermediates"],
          capture_intermediates=lambda mdl, _: mdl.name in names
          and getattr(mdl.parent, "name", "") == "routing",
      )[1]["intermediates"]
  )
  sources = synthetic_tasks.recall_sources(batch, pairs)
  h, w = model_cfg.num_routing_heads, model_cfg.routing.window
  out = {}
  for layer in sorted(inter, key=lambda s: int(s.split("_")[-1])):
    proj = inter[layer]["routing"]
    mu = np.asarray(
        variables["kmeans"][layer]["routing"]["kmeans"]["centroids"]
    )

    def clusters(name):
      x = np.asarray(proj[name]["__call__"][0])
      b, n, _ = x.shape
      v = np.asarray(km.normalize(x.reshape(b, n, h, -1)))
      return np.einsum("bnhd,hkd->bhnk", v, mu).argmax(-1)

    qc = clusters("query")
    kc = clusters("key") if "key" in proj else qc
    seen = []
    for b, t in zip(*np.nonzero(batch["measured"])):
      s = sources[b, t]
      for head in range(h):
        c = qc[b, head, t]
        members = np.sum(
            (kc[b, head, s : t + 1] == c) | (qc[b, head, s : t + 1] == c)
        )
        seen.append(
            kc[b, head, s] == c
            and members <= w + int(model_cfg.routing.exclude_self)
        )
    out[layer] = float(np.mean(seen))
  return out


def train_task(c, task, task_args, *, eval_every, eval_batches):
  """Trains config `c` on `task` through build_trainer / train_step.

  Returns (model config, variables, accuracy curve, eval batches); the
  curve holds accuracy and bits on the measured answers every `eval_every`
  steps and at the end.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from routing_jax.training import sharding, train  # pylint: disable=g-import-not-at-top
  from routing_jax.data import synthetic_tasks  # pylint: disable=g-import-not-at-top

  model_cfg = train.validate_config(c)
  mesh = sharding.create_mesh(
      dict(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1]
  )
  trainer, state = train.build_trainer(
      c, mesh, sharding.logical_rules(), model_cfg
  )
  seq_len, steps = c.data.seq_len, c.train.steps
  make = lambda rng: synthetic_tasks.make_batch(
      task, rng, c.data.batch_size, seq_len, **task_args
  )
  rng = np.random.default_rng(1000 + c.train.seed)
  eval_rng = np.random.default_rng(7)
  batches = [make(eval_rng) for _ in range(eval_batches)]
  forward = jax.jit(lambda v, x: trainer.model.apply(v, x)[0])
  curve = []
  for step in range(1, steps + 1):
    batch = make(rng)
    batch.pop("measured")
    gb = sharding.make_global_batch(batch, mesh, trainer.data_sharding)
    state, _ = train.run_step(
        trainer, trainer.train_step_at(step - 1), state, gb
    )
    if step % eval_every == 0 or step == steps:
      variables = {"params": state.params, "kmeans": state.kmeans}
      scores = [
          synthetic_tasks.answer_accuracy(forward(variables, b["inputs"]), b)
          for b in batches
      ]
      curve.append({
          "step": step,
          "accuracy": float(np.mean([a for a, _ in scores])),
          "bits": float(np.mean([bits for _, bits in scores])),
      })
  return (
      model_cfg,
      {"params": state.params, "kmeans": state.kmeans},
      curve,
      batches,
  )


def causal_accuracy(model_cfg, variables, batches):
  """(accuracy, bits) on the measured answers, the answer at t predicted
  from a forward over tokens 0..t only (later tokens masked out as
  padding), as generation would see it."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from routing_jax.data import synthetic_tasks  # pylint: disable=g-import-not-at-top
  from routing_jax.nn.model import TransformerLM  # pylint: disable=g-import-not-at-top

  model = TransformerLM(model_cfg)

  @jax.jit
  def logits_at(x, t):
    mask = jnp.broadcast_to(jnp.arange(x.shape[1]) <= t, x.shape)
    return model.apply(variables, x, mask=mask)[0][:, t]

  scores = []
  for batch in batches:
    logits = np.zeros(batch["inputs"].shape + (model_cfg.vocab_size,))
    for t in np.unique(np.nonzero(batch["measured"])[1]):
      logits[:, t] = np.asarray(logits_at(batch["inputs"], t))
    scores.append(synthetic_tasks.answer_accuracy(logits, batch))
  return (
      float(np.mean([a for a, _ in scores])),
      float(np.mean([b for _, b in scores])),
  )


def parse_model(name, default_steps):
  """ "full@3000" -> ("full", 3000); "full" -> ("full", default_steps)."""
  kind, _, steps = name.partition("@")
  if kind not in MODELS:
    raise SystemExit(f"--models: unknown model {kind!r}; one of {MODELS}")
  return kind, int(steps) if steps else default_steps


def run_one(task, name, seed, args):
  import jax  # pylint: disable=g-import-not-at-top

  kind, steps = parse_model(name, args.steps)
  c = build_config(kind, seed, steps, args.routing_warmup)
  t0 = time.time()
  model_cfg, variables, curve, eval_batches = train_task(
      c,
      task,
      TASK_ARGS[task],
      eval_every=args.eval_every,
      eval_batches=args.eval_batches,
  )
  row = {
      "task": task,
      "model": name,
      "seed": seed,
      "steps": steps,
      "params": int(sum(x.size for x in jax.tree.leaves(variables["params"]))),
      "accuracy": curve[-1]["accuracy"],
      "bits": curve[-1]["bits"],
      "curve": curve,
      "train_s": round(time.time() - t0, 1),
      "cpu": machine.cpu_model(),
  }
  if kind.startswith("routing_topk"):
    row["causal_accuracy"], row["causal_bits"] = causal_accuracy(
        model_cfg, variables, eval_batches
    )
  if task == "recall" and kind.startswith("routing_causal"):
    row["visibility"] = routing_visibility(
        model_cfg, variables, eval_batches[0], TASK_ARGS[task]["pairs"]
    )
  return row


def table(rows):
  """Mean over seeds per (task, model), as a fraction of the best hybrid
  (the routing model with its routing heads dense, either way, any step
  count) and of the best full attention."""
  lines = [
      (
          "| task | model | steps | params | accuracy (seeds) | vs best hybrid"
          " | vs best full | causal accuracy | bits | routing sees the answer's"
          " key (layer 1, 2) |"
      ),
      "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for task in dict.fromkeys(r["task"] for r in rows):
    runs_of = lambda model: [
        r for r in rows if r["task"] == task and r["model"] == model
    ]
    mean = lambda model, key: float(np.mean([r[key] for r in runs_of(model)]))
    best = lambda prefix: max(
        (
            mean(m, "accuracy")
            for m in dict.fromkeys(r["model"] for r in rows)
            if m.split("@")[0].startswith(prefix) and runs_of(m)
        ),
        default=float("nan"),
    )
    ratio = lambda a, b: f"{a / b:.2f}" if b > 0 else "–"
    hybrid, full = best("hybrid"), best("full")
    for model in dict.fromkeys(r["model"] for r in rows if r["task"] == task):
      runs = runs_of(model)
      accs = ", ".join(f"{r['accuracy']:.3f}" for r in runs)
      vis = [r.get("visibility") for r in runs if r.get("visibility")]
      vis_text = (
          ", ".join("/".join(f"{v:.2f}" for v in x.values()) for x in vis)
          or "–"
      )
      causal = (
          f"{mean(model, 'causal_accuracy'):.3f}"
          if all("causal_accuracy" in r for r in runs)
          else "–"
      )
      lines.append(
          f"| {task} | {model} | {runs[0]['steps']} | {runs[0]['params']:,} |"
          f" {mean(model, 'accuracy'):.3f} ({accs}) |"
          f" {ratio(mean(model, 'accuracy'), hybrid)} |"
          f" {ratio(mean(model, 'accuracy'), full)} | {causal} |"
          f" {mean(model, 'bits'):.2f} | {vis_text} |"
      )
  return "\n".join(lines)


def plot(rows, path):
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  tasks = list(dict.fromkeys(r["task"] for r in rows))
  fig, axes = plt.subplots(
      1, len(tasks), figsize=(6 * len(tasks), 4), squeeze=False
  )
  colors = {m: f"C{i}" for i, m in enumerate(MODELS)}
  for ax, task in zip(axes[0], tasks):
    for r in rows:
      if r["task"] != task:
        continue
      ax.plot(
          [p["step"] for p in r["curve"]],
          [p["accuracy"] for p in r["curve"]],
          color=colors[r["model"].split("@")[0]],
          linestyle="--" if "@" in r["model"] else "-",
          label=r["model"] if r["seed"] == rows[0]["seed"] else None,
      )
    ax.set_title(f"{task}: accuracy on far answers")
    ax.set_xlabel("step")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--tasks", default="recall,lookup")
  p.add_argument("--models", default=",".join(MODELS))
  p.add_argument("--seeds", default="0,1")
  p.add_argument("--steps", type=int, default=1500)
  p.add_argument("--routing_warmup", type=int, default=500)
  p.add_argument("--eval_every", type=int, default=250)
  p.add_argument("--eval_batches", type=int, default=4)
  p.add_argument("--out", default="")
  p.add_argument(
      "--merge",
      default="",
      help=(
          "comma-separated result .json files of earlier sweeps: write "
          "their union (later files win per task, model, seed) to OUT, run "
          "nothing"
      ),
  )
  p.add_argument(
      "--resume",
      action="store_true",
      help="keep the runs already in OUT.json and skip them",
  )
  args = p.parse_args(argv)
  if args.merge:
    merged = {}
    for path in args.merge.split(","):
      with open(path, encoding="utf-8") as f:
        for r in json.load(f):
          merged[(r["task"], r["model"], r["seed"])] = r
    rows = list(merged.values())
    write_results(rows, args.out)
    print(table(rows))
    return rows
  rows = []
  if args.resume and os.path.exists(args.out + ".json"):
    with open(args.out + ".json", encoding="utf-8") as f:
      rows = json.load(f)
  done = {(r["task"], r["model"], r["seed"]) for r in rows}
  for task in args.tasks.split(","):
    for seed in [int(s) for s in args.seeds.split(",")]:
      for kind in args.models.split(","):
        if (task, kind, seed) in done:
          continue
        row = run_one(task, kind, seed, args)
        print(
            json.dumps({k: v for k, v in row.items() if k != "curve"}),
            flush=True,
        )
        rows.append(row)
        if args.out:  # after every run, so an interrupted sweep keeps its rows
          write_results(rows, args.out)
  print(table(rows))
  return rows


def write_results(rows, out):
  os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
  with open(out + ".json", "w", encoding="utf-8") as f:
    json.dump(rows, f, indent=1)
  with open(out + ".md", "w", encoding="utf-8") as f:
    f.write(table(rows) + "\n")
  plot(rows, out + ".png")


if __name__ == "__main__":
  main()
