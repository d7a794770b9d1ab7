# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Milliseconds per generated token: cached decoding vs recomputing.

For each context length c, the per-token cost of producing token c + 1:

  cached     the jitted `routing_jax.nn.generation.decode_step`
             (one token, a cache of constant size) called at positions
             c, c+1, ..., after the cache was filled with c tokens. Two
             numbers: one jitted call per token (`step`, what a host-side
             sampling loop pays, dispatch included) and a jitted `lax.scan`
             over 32 steps divided by 32 (`scan`, what `rj.generate`'s
             device-side loop pays).
  recompute  a jitted forward pass over the whole context [1, c], reading
             the last position's logits: what the reference's slow decode
             and the PyTorch port pay for each token.

The model (all 6 layers have 4 local and 4 causal-routing heads):
  d_model 512, 8 heads of 64, d_ff 2048 (GEGLU), vocab 256, Shaw relative
  positions (±256), local query block / memory flange 128 / 128, routing
  window w 256 with a fixed k = 16 clusters (k = 4096/256, the same model at
  every context), python-loop layers (the default), float32 (--dtype and
  --param-dtype bfloat16 measure bf16 activations and weights), batch 1.

The cache is filled by running the step function through the context (a
scan over chunks of 32 positions), so the cached number is measured AT that
context. It is filled once, through all contexts, keeping a copy at each;
the cached timings then run in rounds over the contexts (each round: a few
single steps and one 32-step scan from a fresh copy of that context's
cache), so that a drifting load (a shared CPU) hits every context alike and
the ratios between contexts stay meaningful. As a correctness check, the
cached logits of the last filled position are compared with the recomputed
ones (same tokens): `max_diff`.

Also measured once, from an empty cache: the same model with
`scan_layers=True`. On CPU its one-call-per-token step is many times slower
(nn.scan slices and restacks the whole stacked cache every step); on GPU it
is faster (fewer kernel launches).

  python benchmarks/decode.py                  # contexts 512..4096, CPU
  python benchmarks/decode.py --quick          # 256, 512: a smoke test
  python benchmarks/decode.py --contexts 512,8192 --out /tmp/decode_gpu

Writes <out>.json (every point plus metadata), <out>.md (the table that is
also printed) and <out>.png (ms/token against context, log-log).
"""

import argparse
import datetime
import json
import os
import statistics
import sys
import textwrap
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import machine  # pylint: disable=g-import-not-at-top,wrong-import-position

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import routing_jax as rj
from routing_jax.nn import generation
from routing_jax.nn import model as M
from routing_jax.nn import model_config

CHUNK = 32  # steps per jitted scan (prefill and the `scan` timing)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument(
      "--contexts",
      default="512,1024,2048,4096",
      help="comma-separated context lengths (multiples of 32)",
  )
  p.add_argument(
      "--out",
      default="benchmarks/results/decode_cpu",
      help="output path prefix (.json, .md, .png are added)",
  )
  p.add_argument(
      "--device-label",
      default="",
      help="free text stored in the JSON (e.g. contention notes)",
  )
  p.add_argument(
      "--quick",
      action="store_true",
      help="contexts 256,512 and 2 reps: a smoke test",
  )
  p.add_argument(
      "--step-reps",
      type=int,
      default=40,
      help=(
          "timed single-token calls per context, spread over the --reps rounds"
      ),
  )
  p.add_argument(
      "--reps",
      type=int,
      default=5,
      help=(
          "rounds of cached timing (one 32-step scan each) and "
          "forward passes per context (at most 3 at c >= 4096)"
      ),
  )
  p.add_argument("--layers", type=int, default=6)
  p.add_argument("--d-model", type=int, default=512)
  p.add_argument("--heads", type=int, default=8)
  p.add_argument("--routing-heads", type=int, default=4)
  p.add_argument("--window", type=int, default=256)
  p.add_argument("--clusters", type=int, default=16)
  p.add_argument(
      "--block", type=int, default=128, help="local query block = memory flange"
  )
  p.add_argument(
      "--dtype",
      default="float32",
      choices=("float32", "bfloat16"),
      help="activation and matmul dtype (ModelConfig.dtype)",
  )
  p.add_argument(
      "--param-dtype",
      default="float32",
      choices=("float32", "bfloat16"),
      help=(
          "weight dtype (ModelConfig.param_dtype): bfloat16 halves the bytes"
          " a batch-1 step reads"
      ),
  )
  args = p.parse_args(argv)
  if args.quick:
    args.contexts, args.reps, args.step_reps = "256,512", 2, 8
  args.contexts = sorted(int(c) for c in args.contexts.split(","))
  if any(c % CHUNK or c < CHUNK for c in args.contexts):
    raise ValueError(
        f"--contexts must be positive multiples of {CHUNK}, got {args.contexts}"
    )
  return args


def bench_config(args):
  return rj.ModelConfig(
      vocab_size=256,
      num_layers=args.layers,
      d_model=args.d_model,
      num_heads=args.heads,
      num_routing_heads=args.routing_heads,
      routing_layers="all",
      d_ff=4 * args.d_model,
      ffn="geglu",
      query_block=args.block,
      memory_flange=args.block,
      routing=rj.RoutingConfig(
          mode="causal", num_clusters=args.clusters, window=args.window
      ),
      position="relative",
      max_relative_position=256,
      max_len=max(args.contexts),
      residual_dropout=0.0,
      scan_layers=False,
      dtype=args.dtype,
      param_dtype=args.param_dtype,
  )


def _block(tree):
  jax.tree.map(lambda a: a.block_until_ready(), tree)
  return tree


def _timed(fn, *a):
  t0 = time.perf_counter()
  out = _block(fn(*a))
  return time.perf_counter() - t0, out


def run(args):
  cfg = bench_config(args)
  model = rj.TransformerLM(cfg)
  t0 = time.perf_counter()
  variables = _block(
      jax.jit(
          lambda k: nn.unbox(M.init_variables(model, k, 1, 2 * args.block))
      )(jax.random.key(0))
  )
  init_s = time.perf_counter() - t0
  n_params = sum(a.size for a in jax.tree.leaves(variables["params"]))
  total = max(args.contexts) + max(CHUNK, args.step_reps) + 1
  tokens = jnp.asarray(
      np.random.default_rng(0).integers(0, 256, (1, total)), jnp.int32
  )

  step = generation.decode_step(model)

  def chunk(variables, cache, start):
    """CHUNK cached steps from position `start`: (last logits, cache)."""

    def body(cache, i):
      tok = jax.lax.dynamic_slice_in_dim(tokens, start + i, 1, axis=1)[:, 0]
      logits, cache = step(variables, cache, tok, start + i)
      return cache, logits

    cache, logits = jax.lax.scan(body, cache, jnp.arange(CHUNK))
    return logits[-1], cache

  step_fn = jax.jit(step, donate_argnums=(1,))
  chunk_fn = jax.jit(chunk, donate_argnums=(1,))
  forward = jax.jit(lambda v, x: model.apply(v, x)[0][:, -1])
  copy = jax.jit(lambda t: jax.tree.map(jnp.copy, t))

  cache = generation.init_cache(model, 1)
  cache_mb = sum(a.nbytes for a in jax.tree.leaves(cache)) / 2**20
  # 1. Prefill through every context, keeping a copy of the cache there.
  filled, points, snapshots = 0, [], {}
  for c in args.contexts:
    t0 = time.perf_counter()
    while filled < c:
      last, cache = chunk_fn(variables, cache, filled)
      filled += CHUNK
    snapshots[c] = _block(copy(cache))
    # recompute: the whole forward over the context; its last logits must
    # equal the cached ones of the last filled position.
    prefill_s = time.perf_counter() - t0
    ctx = tokens[:, :c]
    t0 = time.perf_counter()
    ref = _block(forward(variables, ctx))
    first_s = time.perf_counter() - t0
    times = [
        _timed(forward, variables, ctx)[0]
        for _ in range(args.reps if c < 4096 else min(args.reps, 3))
    ]
    points.append({
        "context": c,
        "prefill_s": prefill_s,
        "recompute_first_call_s": first_s,
        "recompute_ms": 1e3 * statistics.median(times),
        "max_diff": float(jnp.max(jnp.abs(ref - last))),
    })
    print(json.dumps(points[-1]), flush=True)
  del cache
  # 2. Cached timings, interleaved over the contexts round by round so that
  # a change in the machine's load hits every context alike.
  _timed(
      step_fn,
      variables,
      copy(snapshots[args.contexts[0]]),
      tokens[:, 0],
      args.contexts[0],
  )  # compile
  per_round = max(1, args.step_reps // args.reps)
  step_t = {c: [] for c in args.contexts}
  scan_t = {c: [] for c in args.contexts}
  for _ in range(args.reps):
    for c in args.contexts:
      work = _block(copy(snapshots[c]))
      for i in range(per_round):  # positions c, c+1, ...
        dt, (_, work) = _timed(
            step_fn, variables, work, tokens[:, c + i], c + i
        )
        step_t[c].append(dt)
      work = _block(copy(snapshots[c]))
      scan_t[c].append(_timed(chunk_fn, variables, work, c)[0] / CHUNK)
  for p in points:
    c = p["context"]
    p["cached_step_ms"] = 1e3 * statistics.median(step_t[c])
    p["cached_scan_ms"] = 1e3 * statistics.median(scan_t[c])
    p["speedup_step"] = p["recompute_ms"] / p["cached_step_ms"]
    p["speedup_scan"] = p["recompute_ms"] / p["cached_scan_ms"]
    print(json.dumps(p), flush=True)
  meta = {"init_s": init_s, "params": int(n_params), "cache_mb": cache_mb}
  meta.update(scan_layout_steps(args, cfg, variables, tokens))
  return cfg, meta, points


def scan_layout_steps(args, cfg, variables, tokens):
  """One-call-per-token decode from an empty cache: loop vs scanned layers.

  The step cost does not depend on the position (see the points), so this
  compares the layouts without a second prefill.
  """
  out = {}
  scan_cfg = cfg.replace(scan_layers=True)
  layouts = (
      ("loop", cfg, variables),
      (
          "scan",
          scan_cfg,
          {c: M.loop_to_scan(t, scan_cfg) for c, t in variables.items()},
      ),
  )
  for name, c, v in layouts:
    model = rj.TransformerLM(c)
    fn = jax.jit(
        generation.decode_step(model),
        donate_argnums=(1,),
    )
    cache = generation.init_cache(model, 1)
    _, (_, cache) = _timed(fn, v, cache, tokens[:, 0], 0)
    times = []
    for i in range(1, min(args.step_reps, 16) + 1):
      dt, (_, cache) = _timed(fn, v, cache, tokens[:, i], i)
      times.append(dt)
    out[f"{name}_layers_step_ms_from_empty_cache"] = 1e3 * statistics.median(
        times
    )
  return out


def table(points):
  lines = [
      (
          "| context | cached step ms/token | cached scan ms/token | recompute "
          "ms/token | speedup (step) | speedup (scan) | max abs logit diff |"
      ),
      "|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for p in points:
    lines.append(
        f"| {p['context']} | {p['cached_step_ms']:.2f} | "
        f"{p['cached_scan_ms']:.2f} | {p['recompute_ms']:.1f} | "
        f"{p['speedup_step']:.0f}x | {p['speedup_scan']:.0f}x | "
        f"{p['max_diff']:.1e} |"
    )
  return "\n".join(lines)


def targets(points):
  """The issue's targets, from this run's numbers."""
  by = {p["context"]: p for p in points}
  out = {}
  if 2048 in by:
    out["speedup_at_2048"] = by[2048]["speedup_step"]
    out["speedup_at_2048_ok"] = by[2048]["speedup_step"] >= 50
  if 512 in by and 4096 in by:
    for kind in ("step", "scan"):
      r = by[4096][f"cached_{kind}_ms"] / by[512][f"cached_{kind}_ms"]
      out[f"ratio_4096_over_512_{kind}"] = r
      out[f"ratio_4096_over_512_{kind}_ok"] = r <= 1.5
  return out


def plot(points, path, title):
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("matplotlib missing: no plot", file=sys.stderr)
    return
  ctx = [p["context"] for p in points]
  fig, ax = plt.subplots(figsize=(6.4, 4.4))
  for key, label, style in (
      ("recompute_ms", "recompute full forward", "o-"),
      ("cached_step_ms", "cached, one jitted step per token", "s-"),
      ("cached_scan_ms", "cached, lax.scan of 32 steps", "^-"),
  ):
    ax.plot(ctx, [p[key] for p in points], style, label=label)
  for p in points:
    ax.annotate(
        f"{p['speedup_step']:.0f}x",
        (p["context"], p["recompute_ms"]),
        textcoords="offset points",
        xytext=(0, 6),
        ha="center",
        fontsize=8,
    )
  ax.set_xscale("log", base=2)
  ax.set_yscale("log")
  ax.set_xticks(ctx, [str(c) for c in ctx])
  ax.set_xlabel("context length (tokens already generated)")
  ax.set_ylabel("ms per generated token")
  ax.set_title(textwrap.fill(title, 70), fontsize=9)
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv=None):
  args = parse_args(argv)
  dev = jax.devices()[0]
  started = datetime.datetime.now().isoformat(timespec="seconds")
  load = os.getloadavg()
  cfg, meta, points = run(args)
  res = {
      "meta": {
          "date": started,
          "device": {"platform": dev.platform, "kind": dev.device_kind},
          "device_label": args.device_label,
          "jax": jax.__version__,
          **machine.describe(),
          "load_average_at_start": load,
          "load_average_at_end": os.getloadavg(),
          "model": dict(model_config.as_mapping(cfg)),
          "batch": 1,
          "chunk": CHUNK,
          "step_reps": args.step_reps,
          "reps": args.reps,
          **meta,
          "choices": (
              f"{args.layers} layers x ({args.heads - args.routing_heads}"
              f" local + {args.routing_heads} causal routing heads), "
              f"d_model {args.d_model}, head_dim"
              f" {args.d_model // args.heads}, d_ff {4 * args.d_model} GEGLU,"
              f" vocab 256, relative positions, q/m {args.block}/{args.block},"
              f" w {args.window}, k {args.clusters} fixed, python-loop"
              f" layers, {args.dtype} (weights {args.param_dtype}), batch 1"
          ),
      },
      "points": points,
      "targets": targets(points),
  }
  prefix = args.out
  os.makedirs(os.path.dirname(prefix) or ".", exist_ok=True)
  with open(prefix + ".json", "w") as f:
    json.dump(res, f, indent=1)
  md = table(points)
  title = (
      f"Cached decoding vs recompute, {dev.device_kind} "
      f"({dev.platform}). {args.device_label}"
  )
  with open(prefix + ".md", "w") as f:
    f.write(
        f"# Decoding: ms per generated token\n\n{title}\n\n"
        f"Model: {res['meta']['choices']} ({meta['params']/1e6:.1f}M "
        f"params, cache {meta['cache_mb']:.0f} MiB).\n\n{md}\n\n"
        f"Targets: {json.dumps(res['targets'])}\n\n"
        "One jitted step per token from an empty cache, python-loop vs "
        "scanned layers: "
        f"{meta['loop_layers_step_ms_from_empty_cache']:.1f} vs "
        f"{meta['scan_layers_step_ms_from_empty_cache']:.1f} ms.\n"
    )
  plot(points, prefix + ".png", title)
  print(md)
  print("targets:", json.dumps(res["targets"]))


if __name__ == "__main__":
  main()
