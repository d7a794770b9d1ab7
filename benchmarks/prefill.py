# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""A long prompt into the decode cache: one prefill pass vs token by token.

The decode benchmark's model (6 layers, d_model 512, 4 local + 4 causal
routing heads of 64, routing window 256 with 16 clusters, local blocks of
128, relative positions, float32, batch 1). For a prompt of P tokens:

  prefill   one jitted `model.apply(..., prefill=True)`: the prompt runs in
            parallel through the training path and fills the local and
            per-cluster rings;
  stepped   one jitted `lax.scan` of the cached decode step over the P
            positions (what feeding the prompt to `generate` costs without
            a prefill function).

Both leave the same cache (checked: largest difference of any cache entry
and of the last position's logits) and are timed after compilation, best
of --reps runs, interleaved.

  python benchmarks/prefill.py --prompt 4096 --out benchmarks/results/prefill
"""

import argparse
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import routing_jax as rj  # pylint: disable=g-import-not-at-top,wrong-import-position
from routing_jax.nn import generation  # pylint: disable=g-import-not-at-top,wrong-import-position
from routing_jax.nn import model as model_lib  # pylint: disable=g-import-not-at-top,wrong-import-position


def config(prompt):
  return rj.ModelConfig(
      vocab_size=256,
      num_layers=6,
      d_model=512,
      num_heads=8,
      num_routing_heads=4,
      d_ff=2048,
      query_block=128,
      memory_flange=128,
      routing=rj.RoutingConfig(num_clusters=16, window=256),
      position="relative",
      max_relative_position=256,
      max_len=prompt,
      residual_dropout=0.0,
  )


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--prompt", type=int, default=4096)
  p.add_argument("--reps", type=int, default=3)
  p.add_argument("--out", default="")
  args = p.parse_args(argv)
  cfg = config(args.prompt)
  model = rj.TransformerLM(cfg)
  variables = jax.jit(
      lambda k: jax.tree.map(
          jnp.asarray, model_lib.init_variables(model, k, 1, 256)
      )
  )(jax.random.key(0))
  variables = {"params": variables["params"], "kmeans": variables["kmeans"]}
  tokens = jnp.asarray(
      np.random.default_rng(0).integers(0, 256, (1, args.prompt)), jnp.int32
  )
  cache0 = generation.init_cache(model, 1)
  step = generation.step_fn(model)

  @jax.jit
  def prefill(variables, cache, tokens):
    (logits, _), new = model.apply(
        dict(variables, cache=cache), tokens, prefill=True, mutable=["cache"]
    )
    return logits[:, -1], new["cache"]

  @jax.jit
  def stepped(variables, cache, tokens):
    def body(state, t):
      logits, state = step(state, tokens[:, t], t)
      return state, logits

    (_, cache), logits = jax.lax.scan(
        body, (variables, cache), jnp.arange(tokens.shape[1])
    )
    return logits[-1], cache

  block = lambda tree: jax.tree.map(lambda a: a.block_until_ready(), tree)
  results = {}
  outs = {}
  for name, fn in (("prefill", prefill), ("stepped", stepped)):
    t0 = time.perf_counter()
    outs[name] = block(fn(variables, cache0, tokens))
    results[f"{name}_first_call_s"] = time.perf_counter() - t0
  times = {"prefill": [], "stepped": []}
  for _ in range(args.reps):
    for name, fn in (("prefill", prefill), ("stepped", stepped)):
      t0 = time.perf_counter()
      block(fn(variables, cache0, tokens))
      times[name].append(time.perf_counter() - t0)
  diff = lambda a, b: float(
      jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32)))
  )
  results.update(
      prompt=args.prompt,
      reps=args.reps,
      machine=platform.machine(),
      devices=str(jax.devices()),
      load=os.getloadavg(),
      prefill_s=min(times["prefill"]),
      stepped_s=min(times["stepped"]),
      all_times=times,
      logits_max_diff=diff(outs["prefill"][0], outs["stepped"][0]),
      cache_max_diff=max(
          diff(a, b)
          for a, b in zip(
              jax.tree.leaves(outs["prefill"][1]),
              jax.tree.leaves(outs["stepped"][1]),
          )
      ),
  )
  results["speedup"] = results["stepped_s"] / results["prefill_s"]
  table = (
      "| prompt | prefill (one pass) | token by token (scan) | speed-up | "
      "max diff logits / cache |\n|---|---|---|---|---|\n"
      f"| {args.prompt} | {results['prefill_s']:.2f} s | "
      f"{results['stepped_s']:.2f} s | {results['speedup']:.1f}x | "
      f"{results['logits_max_diff']:.1e} / {results['cache_max_diff']:.1e} |"
  )
  print(json.dumps({k: v for k, v in results.items() if k != "all_times"}))
  print(table)
  if args.out:
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".json", "w", encoding="utf-8") as f:
      json.dump(results, f, indent=1)
    with open(args.out + ".md", "w", encoding="utf-8") as f:
      f.write(table + "\n")


if __name__ == "__main__":
  main()
