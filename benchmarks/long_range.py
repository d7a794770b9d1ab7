r"""Long-range retrieval: can an attention kind fetch content beyond its window?

Synthetic tasks whose answers lie further back than the local span, trained
through the project's own `build_trainer` / `train_step` at equal parameters
and steps for each attention kind:

  local          every head local (query block q, memory flange m)
  full           every head attends to the whole past (one block of n)
  routing_causal half the heads local, half exactly-causal k-means routing
  routing_topk   half the heads local, half the paper's balanced routing

Tasks (bytes, loss only on the answer positions):
  copy    a random span of L bytes, then the same span again: the second
          copy's bytes are predictable only from L positions back.
  recall  multi-query associative recall: P key/value byte pairs, a gap of
          random filler longer than the local span, then queries "key value"
          for keys drawn from the pairs in random order; the answer is the
          value paired with the key.
  phrase  phrases of 2p bytes planted at random places in random text; later
          each phrase's first p bytes appear again (shuffled, random places)
          and the model must continue with the other p.

Run:
  python benchmarks/long_range.py --task=recall --models=local,full,\
routing_causal,routing_topk --steps=1500 --out=benchmarks/results/long_range
Prints one JSON line per (task, model, seed) and writes a table and a plot.
"""

import argparse
import ast
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MODELS = ("local", "full", "routing_causal", "routing_topk")
TASKS = ("copy", "recall", "lookup", "phrase")


# ----------------------------------------------------------------- tasks
def copy_batch(rng, batch, seq_len, span):
  """[random span][same span]... inputs right-shifted with start token 0."""
  tokens = np.zeros((batch, seq_len + 1), np.int32)
  weights = np.zeros((batch, seq_len), np.float32)
  src = rng.integers(1, 256, (batch, span))
  tokens[:, 1:span + 1] = src
  tokens[:, span + 1:2 * span + 1] = src
  rest = seq_len + 1 - (2 * span + 1)
  if rest > 0:
    tokens[:, 2 * span + 1:] = rng.integers(1, 256, (batch, rest))
  # Target j is tokens[j + 1]; the copy's bytes after its first are
  # predictable (the first needs the span's start, also predictable).
  weights[:, span:2 * span] = 1.0
  return tokens, weights


def recall_batch(rng, batch, seq_len, pairs, queries, gap, key_vocab=127,
                 value_vocab=128):
  """Key/value pairs, filler, then query/answer pairs (answers scored).

  Keys are drawn (distinct) from ids 1..key_vocab, values from
  128..128+value_vocab−1; the filler comes from the value ids, so it never
  looks like a key. Queries repeat keys when queries > pairs.
  """
  tokens = np.zeros((batch, seq_len + 1), np.int32)
  weights = np.zeros((batch, seq_len), np.float32)
  measured = np.zeros((batch, seq_len), bool)
  need = 1 + 2 * pairs + gap + 2 * queries
  if need > seq_len + 1:
    raise ValueError(f"recall needs seq_len >= {need - 1}")
  for b in range(batch):
    keys = rng.choice(np.arange(1, key_vocab + 1), pairs, replace=False)
    values = rng.integers(128, 128 + value_vocab, pairs)
    kv = np.stack([keys, values], 1).reshape(-1)
    tokens[b, 1:1 + 2 * pairs] = kv
    # Filler from the value range: it never looks like a key.
    start = 1 + 2 * pairs
    tokens[b, start:start + gap] = rng.integers(128, 128 + value_vocab, gap)
    q = rng.choice(pairs, queries, replace=queries > pairs)
    qa = np.stack([keys[q], values[q]], 1).reshape(-1)
    s = start + gap
    tokens[b, s:s + 2 * queries] = qa
    tail = seq_len + 1 - (s + 2 * queries)
    tokens[b, s + 2 * queries:] = rng.integers(128, 128 + value_vocab, tail)
    # The answer at token s + 2i + 1 is target index s + 2i. A key asked
    # again has its answer nearby too; only first asks are measured.
    weights[b, s + np.arange(queries) * 2] = 1.0
    first = np.unique(q, return_index=True)[1]
    measured[b, s + first * 2] = True
  return tokens, weights, measured


def lookup_batch(rng, batch, seq_len, pairs, queries, gap, key_vocab=8,
                 value_vocab=16):
  """One-hop recall: each pair is ONE token that names its key and value.

  Pair tokens are 128 + key·value_vocab + value, query tokens 1 + key,
  answers 32 + value, filler 64..127. A query finds its pair by content
  alone (no previous-token circuit needed) at any distance.
  """
  if key_vocab * value_vocab > 128 or key_vocab > 31 or value_vocab > 32:
    raise ValueError("lookup needs key_vocab·value_vocab <= 128")
  tokens = np.zeros((batch, seq_len + 1), np.int32)
  weights = np.zeros((batch, seq_len), np.float32)
  need = 1 + pairs + gap + 2 * queries
  if need > seq_len + 1:
    raise ValueError(f"lookup needs seq_len >= {need - 1}")
  for b in range(batch):
    keys = rng.choice(key_vocab, pairs, replace=False)
    values = rng.integers(0, value_vocab, pairs)
    tokens[b, 1:1 + pairs] = 128 + keys * value_vocab + values
    start = 1 + pairs
    tokens[b, start:start + gap] = rng.integers(64, 128, gap)
    q = rng.choice(pairs, queries, replace=queries > pairs)
    s = start + gap
    tokens[b, s:s + 2 * queries] = np.stack(
        [1 + keys[q], 32 + values[q]], 1).reshape(-1)
    tokens[b, s + 2 * queries:] = rng.integers(
        64, 128, seq_len + 1 - (s + 2 * queries))
    weights[b, s + np.arange(queries) * 2] = 1.0
  return tokens, weights


def phrase_batch(rng, batch, seq_len, phrases, half):
  """Planted phrases, later their first halves: continue with the second."""
  tokens = rng.integers(1, 256, (batch, seq_len + 1)).astype(np.int32)
  tokens[:, 0] = 0
  weights = np.zeros((batch, seq_len), np.float32)
  p = 2 * half
  mid = (seq_len + 1) // 2
  slots_first = (mid - 1) // p
  slots_second = (seq_len + 1 - mid) // p
  if phrases > min(slots_first, slots_second):
    raise ValueError("too many phrases for seq_len")
  for b in range(batch):
    ph = rng.integers(1, 256, (phrases, p))
    at1 = 1 + np.sort(rng.choice(slots_first, phrases, replace=False)) * p
    at2 = mid + np.sort(rng.choice(slots_second, phrases, replace=False)) * p
    order = rng.permutation(phrases)
    for i in range(phrases):
      tokens[b, at1[i]:at1[i] + p] = ph[i]
      j = order[i]
      tokens[b, at2[i]:at2[i] + p] = ph[j]
      # Targets of the second half: token index at2+half .. at2+p-1, i.e.
      # target indices at2+half-1 .. at2+p-2.
      weights[b, at2[i] + half - 1:at2[i] + p - 1] = 1.0
  return tokens, weights


def make_batch(task, rng, batch, seq_len, args):
  if task == "copy":
    tok, w = copy_batch(rng, batch, seq_len, args.span)
  elif task == "recall":
    tok, w, measured = recall_batch(rng, batch, seq_len, args.pairs,
                                    args.queries, args.gap, args.key_vocab,
                                    args.value_vocab)
    return {"inputs": tok[:, :-1], "targets": tok[:, 1:], "weights": w,
            "measured": measured}
  elif task == "lookup":
    tok, w = lookup_batch(rng, batch, seq_len, args.pairs, args.queries,
                          args.gap, args.key_vocab, args.value_vocab)
  else:
    tok, w = phrase_batch(rng, batch, seq_len, args.phrases, args.half)
  return {"inputs": tok[:, :-1], "targets": tok[:, 1:], "weights": w}


# ----------------------------------------------------------------- models
def build_config(kind, args):
  from experiments import common  # pylint: disable=g-import-not-at-top
  c = common.base_config()
  m = c.model
  m.vocab_size = 256
  m.num_layers = args.layers
  m.d_model = args.d_model
  m.num_heads = args.heads
  m.d_ff = 4 * args.d_model
  m.norm = "pre"
  m.position = "relative"
  n = args.seq_len
  common.set_local_blocks(m, args.block)
  m.max_relative_position = 2 * args.block + 1
  m.residual_dropout = 0.0
  m.num_clusters = args.clusters
  m.window = args.window
  if kind == "local":
    common.set_routing_heads(m, 0)
  elif kind == "full":
    # One block over the whole sequence, relative positions over all of it.
    common.set_routing_heads(m, 0)
    m.query_block = n
    m.memory_flange = 0
    m.max_relative_position = n
  else:
    common.set_routing_heads(m, args.heads // 2)
    m.routing = kind.split("_")[1]
  c.data.name = "synthetic"
  c.data.seq_len = n
  c.data.batch_size = args.batch
  m.max_len = n
  t = c.train
  t.optimizer = "adamw"
  t.lr = args.lr
  t.schedule = "cosine"
  t.warmup_steps = args.warmup
  t.weight_decay = 0.0
  t.grad_clip = 1.0
  t.steps = args.steps
  t.seed = args.seed
  for item in args.set or ():
    key, _, value = item.partition("=")
    section, field = key.split(".")
    try:
      value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      pass  # a plain string
    c[section][field] = value
  return c


def recall_sources(tokens_in, weights, pairs):
  """For the recall task: per scored position t, the input position whose
  token is the answer (the value right after the matching key)."""
  src = np.full(weights.shape, -1, np.int64)
  for b in range(weights.shape[0]):
    kv = tokens_in[b, 1:1 + 2 * pairs]
    for t in np.nonzero(weights[b])[0]:
      key = tokens_in[b, t]
      i = int(np.nonzero(kv[0::2] == key)[0][0])
      src[b, t] = 1 + 2 * i + 1
  return src


def routing_visibility(model_cfg, params, kmeans, inputs, sources, weights):
  """Share of scored queries whose answer token is visible to them in each
  routing layer (same cluster and within the window of members)."""
  import jax  # pylint: disable=g-import-not-at-top
  from routing_jax import kmeans as km  # pylint: disable=g-import-not-at-top
  from routing_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  model = model_lib.TransformerLM(model_cfg)
  want = ("query", "key")
  inter = model.apply(
      {"params": params, "kmeans": kmeans}, inputs,
      capture_intermediates=lambda mdl, _: (
          mdl.name in want and getattr(mdl.parent, "name", "") == "routing"),
      mutable=["intermediates"])[1]["intermediates"]
  inter = jax.device_get(inter)
  h, w = model_cfg.num_routing_heads, model_cfg.window
  out = {}
  for layer in sorted(inter, key=lambda s: int(s.split("_")[-1])):
    r = inter[layer]["routing"]
    mu = np.asarray(kmeans[layer]["routing"]["kmeans"]["centroids"])
    def clusters(name):
      x = np.asarray(r[name]["__call__"][0])
      b, n, _ = x.shape
      v = np.asarray(km.normalize(x.reshape(b, n, h, -1)))
      return np.einsum("bnhd,hkd->bhnk", v, mu).argmax(-1)  # [b, h, n]
    qc = clusters("query")
    kc = clusters("key") if "key" in r else qc
    seen, total = 0, 0
    for b, t in zip(*np.nonzero(weights)):
      s = sources[b, t]
      for hh in range(h):
        total += 1
        c = qc[b, hh, t]
        if kc[b, hh, s] != c:
          continue
        members = np.sum((kc[b, hh, s:t + 1] == c) | (qc[b, hh, s:t + 1] == c))
        seen += int(members <= w) if not model_cfg.exclude_self else int(
            members <= w + 1)
    out[layer] = seen / max(total, 1)
  return out


def answer_metrics(logits, batch):
  """Accuracy and bits per answer token over the weighted positions."""
  logits = np.asarray(logits, np.float64)
  w = batch.get("measured", batch["weights"] > 0)
  t = batch["targets"]
  m = logits.max(-1, keepdims=True)
  logp = logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))
  nll = -np.take_along_axis(logp, t[..., None], -1)[..., 0]
  acc = (logits.argmax(-1) == t)
  return float(acc[w].mean()), float(nll[w].mean() / math.log(2))


def run_one(task, kind, args):
  import jax  # pylint: disable=g-import-not-at-top
  from routing_jax import sharding, train  # pylint: disable=g-import-not-at-top
  c = build_config(kind, args)
  model_cfg = train.validate_config(c)
  mesh = sharding.create_mesh(dict(data=1, fsdp=1, tensor=1),
                              devices=jax.devices()[:1])
  trainer, state = train.build_trainer(c, mesh, sharding.logical_rules(),
                                       model_cfg)
  params = sum(x.size for x in jax.tree.leaves(state.params))
  rng = np.random.default_rng(1000 + args.seed)
  eval_rng = np.random.default_rng(7)
  eval_batches = [make_batch(task, eval_rng, args.batch, args.seq_len, args)
                  for _ in range(args.eval_batches)]
  apply = jax.jit(lambda p, k, x: trainer.model.apply(
      {"params": p, "kmeans": k}, x)[0])
  curve = []
  t0 = time.time()

  def evaluate(step):
    accs, bits = [], []
    for b in eval_batches:
      with jax.set_mesh(mesh):
        logits = apply(state.params, state.kmeans, b["inputs"])
      a, bt = answer_metrics(logits, b)
      accs.append(a)
      bits.append(bt)
    row = {"step": step, "accuracy": float(np.mean(accs)),
           "bits": float(np.mean(bits))}
    curve.append(row)
    if args.verbose:
      print(json.dumps(dict(row, task=task, model=kind,
                            s=round(time.time() - t0, 1))), flush=True)

  for step in range(args.steps):
    batch = make_batch(task, rng, args.batch, args.seq_len, args)
    batch.pop("measured", None)
    gb = sharding.make_global_batch(batch, mesh, trainer.data_sharding)
    state, m = train.run_step(trainer, trainer.train_step, state, gb)
    if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
      evaluate(step + 1)
  km = jax.device_get(m)
  visibility = {}
  if task == "recall" and kind.startswith("routing_causal"):
    b = eval_batches[0]
    visibility = routing_visibility(
        model_cfg, state.params, state.kmeans, b["inputs"],
        recall_sources(b["inputs"], b["measured"], args.pairs),
        b["measured"])
  return {
      "task": task, "model": kind, "seed": args.seed, "params": int(params),
      "steps": args.steps, "accuracy": curve[-1]["accuracy"],
      "bits": curve[-1]["bits"], "curve": curve,
      "train_s": round(time.time() - t0, 1),
      "kmeans_entropy": float(km.get("kmeans/entropy", 0.0)),
      "kmeans_empty": float(km.get("kmeans/empty_fraction", 0.0)),
      "set": args.set or [],
      "routing_visibility": visibility,
  }


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--task", default="recall", choices=TASKS)
  p.add_argument("--models", default=",".join(MODELS))
  p.add_argument("--steps", type=int, default=1500)
  p.add_argument("--seeds", default="0")
  p.add_argument("--seq_len", type=int, default=256)
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--layers", type=int, default=2)
  p.add_argument("--d_model", type=int, default=128)
  p.add_argument("--heads", type=int, default=4)
  p.add_argument("--block", type=int, default=16)
  p.add_argument("--clusters", type=int, default=16)
  p.add_argument("--window", type=int, default=16)
  p.add_argument("--lr", type=float, default=1e-3)
  p.add_argument("--warmup", type=int, default=100)
  p.add_argument("--span", type=int, default=128)
  p.add_argument("--pairs", type=int, default=16)
  p.add_argument("--queries", type=int, default=16)
  p.add_argument("--gap", type=int, default=64)
  p.add_argument("--key_vocab", type=int, default=127)
  p.add_argument("--value_vocab", type=int, default=128)
  p.add_argument("--phrases", type=int, default=8)
  p.add_argument("--half", type=int, default=4)
  p.add_argument("--eval_every", type=int, default=250)
  p.add_argument("--eval_batches", type=int, default=4)
  p.add_argument("--set", action="append",
                 help="config override section.field=value (repeatable)")
  p.add_argument("--out", default="")
  p.add_argument("--verbose", action="store_true")
  args = p.parse_args(argv)
  rows = []
  for seed in [int(s) for s in args.seeds.split(",")]:
    args.seed = seed
    for kind in args.models.split(","):
      row = run_one(args.task, kind, args)
      print(json.dumps({k: v for k, v in row.items() if k != "curve"}),
            flush=True)
      rows.append(row)
  if args.out:
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".json", "w", encoding="utf-8") as f:
      json.dump(rows, f, indent=1)
  return rows


if __name__ == "__main__":
  main()
