# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Child processes of peer_pytorch.py: one measurement point each.

Run as `python benchmarks/peer_workers.py '<json spec>'`. The spec names a
side ("port": routing-transformer on torch, run with the peer venv's python;
"ours": routing-jax, run with the project's python) and a kind ("train",
"gen", "leak"). The result is printed as one line `RESULT {json}`.

Nothing heavy is imported at module level: the port's interpreter has no
jax and ours has no torch.
"""

import json
import os
import resource
import statistics
import sys
import time

WINDOW = 128  # tokens per cluster (port: window_size; ours: window)


def rss_mb():
  """Peak RSS of this process so far, in MiB (ru_maxrss is KiB on Linux)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def summary(times):
  return {
      "times_s": times,
      "median_s": statistics.median(times),
      "min_s": min(times),
  }


# ---------------------------------------------------------------- the port


def port_model(spec, n):
  from routing_transformer import RoutingTransformerLM  # pylint: disable=g-import-not-at-top
  # n_local_attn_heads=0 (the default here): every head routes; local heads
  # see their block of 128 and the one before, as ours. causal=True makes shared_qk
  # default to True, so no to_k and no memory key/value (num_mem_kv 0).
  # ff_glu with ff_mult 4 is a GEGLU of hidden 4·dim, like ours.
  return RoutingTransformerLM(
      num_tokens=256,
      dim=spec["d_model"],
      depth=spec["layers"],
      heads=spec["heads"],
      dim_head=spec["d_model"] // spec["heads"],
      max_seq_len=n,
      window_size=WINDOW,
      causal=True,
      n_local_attn_heads=spec.get("local_heads", 0),
      ff_glu=True,
      ff_mult=4,
  )


def port_versions():
  import importlib.metadata as md  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top

  names = (
      "torch",
      "routing-transformer",
      "local-attention",
      "einops",
      "product-key-memory",
      "mixture-of-experts",
  )
  out = {}
  for name in names:
    try:
      out[name] = md.version(name)
    except md.PackageNotFoundError:
      pass
  out["torch_num_threads"] = torch.get_num_threads()
  return out


def port_train(spec):
  import torch  # pylint: disable=g-import-not-at-top
  from routing_transformer.autoregressive_wrapper import AutoregressiveWrapper  # pylint: disable=g-import-not-at-top

  torch.manual_seed(0)
  n = spec["n"]
  model = port_model(spec, n)
  wrapper = AutoregressiveWrapper(model)
  opt = torch.optim.Adam(model.parameters(), lr=1e-4)
  x = torch.randint(0, 256, (spec["batch"], n + 1))
  base = rss_mb()

  def step():
    # The k-means EMA update runs in the backward hook the port registers
    # (_register_kmeans_update=True by default).
    opt.zero_grad(set_to_none=True)
    loss = wrapper(x, return_loss=True)
    loss.backward()
    opt.step()
    return float(loss)

  t0 = time.perf_counter()
  losses = [step()]  # first step: k-means init from data (10 iterations)
  first = time.perf_counter() - t0
  times = []
  for _ in range(spec["steps"]):
    t0 = time.perf_counter()
    losses.append(step())
    times.append(time.perf_counter() - t0)
  return dict(
      summary(times),
      first_step_s=first,
      losses=losses,
      baseline_rss_mb=base,
      peak_rss_mb=rss_mb(),
      params=sum(p.numel() for p in model.parameters()),
      ffn_params_per_layer=sum(
          p.numel()
          for name, p in model.named_parameters()
          if ".layers.0.1." in name and ".norm." not in name
      ),
      num_clusters=n // WINDOW,
      versions=port_versions(),
  )


def port_gen(spec):
  import torch  # pylint: disable=g-import-not-at-top
  from routing_transformer.autoregressive_wrapper import AutoregressiveWrapper  # pylint: disable=g-import-not-at-top

  torch.manual_seed(0)
  c, b, tokens = spec["context"], spec["batch"], spec["tokens"]
  # max_seq_len = context: generate() keeps the last max_seq_len tokens, so
  # every new token is one full forward over c tokens.
  wrapper = AutoregressiveWrapper(port_model(spec, c))
  prompt = torch.randint(0, 256, (b, c))
  base = rss_mb()
  t0 = time.perf_counter()
  wrapper.generate(prompt, 1)  # also initialises k-means from the prompt
  first = time.perf_counter() - t0
  t0 = time.perf_counter()
  out = wrapper.generate(prompt, tokens)
  total = time.perf_counter() - t0
  assert out.shape == (b, tokens), out.shape
  return {
      "ms_per_token": 1e3 * total / tokens,
      "total_s": total,
      "first_call_s": first,
      "baseline_rss_mb": base,
      "peak_rss_mb": rss_mb(),
      "versions": port_versions(),
  }


def port_leak(spec):
  """Does position i's output depend on tokens after i? (eval mode)."""
  import torch  # pylint: disable=g-import-not-at-top
  from routing_transformer.routing_transformer import Kmeans, distribution  # pylint: disable=g-import-not-at-top

  torch.manual_seed(0)
  n = spec["n"]
  model = port_model(spec, n).eval()
  x = torch.randint(0, 256, (1, n))
  coverage = []

  def hook(_, __, out):
    # Tokens that no cluster's top-w picks get no routed output at all.
    idx = distribution(out[0], WINDOW)  # [b, h, clusters·w]
    seen = torch.zeros(idx.shape[:2] + (n,), dtype=torch.bool)
    seen.scatter_(2, idx, True)
    coverage.append(seen.float().mean().item())

  with torch.no_grad():
    model(x)  # k-means init from data on the first call
    for m in model.modules():
      if isinstance(m, Kmeans):
        m.register_forward_hook(hook)
    ref, _ = model(x)
    dropped = 1.0 - statistics.mean(coverage)
    points = []
    for p in spec["cuts"]:
      y = x.clone()
      y[:, p:] = torch.randint(0, 256, (1, n - p))
      out, _ = model(y)
      d = (ref[0, :p] - out[0, :p]).abs().amax(-1)
      points.append({
          "cut": p,
          "max_abs_logit_change_before_cut": d.max().item(),
          "positions_changed": int((d > 1e-5).sum()),
          "positions": p,
      })
  return {"points": points, "fraction_tokens_in_no_cluster": dropped}


# ---------------------------------------------------------------- ours


def ours_config(spec, n, max_len=None):
  """Our model matching port_model; spec["routing_overrides"] replaces
  ModelConfig fields (e.g. init_scale) or else RoutingConfig ones."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  import routing_jax as rj  # pylint: disable=g-import-not-at-top

  overrides = dict(spec.get("routing_overrides", {}))
  model_fields = {f.name for f in dataclasses.fields(rj.ModelConfig)}
  model_overrides = {
      k: overrides.pop(k) for k in list(overrides) if k in model_fields
  }
  # Pre-norm, RoPE, no dropout and a GEGLU FFN with biases: the port's
  # architecture, parameter for parameter.
  fields = dict(
      vocab_size=256,
      num_layers=spec["layers"],
      d_model=spec["d_model"],
      num_heads=spec["heads"],
      num_routing_heads=spec["heads"] - spec.get("local_heads", 0),
      routing=rj.RoutingConfig(
          window=WINDOW,
          num_clusters=n // WINDOW,
          mode="causal",
          **overrides,
      ),
      max_len=max_len or n,
      query_block=128,
      memory_flange=128,
      d_ff=spec["d_ff"],
      ffn="geglu",
      ffn_bias=True,
      norm="pre",
      position=spec["position"],
      residual_dropout=0.0,
      # cpu_defaults.py measures "bfloat16"; the peer comparison is float32.
      dtype=spec.get("dtype", "float32"),
  )
  fields.update(model_overrides)
  return rj.ModelConfig(**fields)


def ours_versions():
  import importlib.metadata as md  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top

  out = {name: md.version(name) for name in ("jax", "jaxlib", "flax", "optax")}
  out["backend"] = jax.default_backend()
  out["devices"] = [d.device_kind for d in jax.devices()]
  return out


def _block(tree):
  import jax  # pylint: disable=g-import-not-at-top

  return jax.block_until_ready(tree)


def ours_train_setup(spec, n, b):
  """(cfg, jitted train step, initial TrainState, batch) of our side.

  The library's train step (loss, grads, k-means EMA update, Adam) on the
  model of ours_config, the state donated; shared with
  step_profile.py.
  """
  import functools  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  import routing_jax as rj  # pylint: disable=g-import-not-at-top
  from routing_jax.training import train  # pylint: disable=g-import-not-at-top

  cfg = ours_config(spec, n)
  model = rj.TransformerLM(cfg)
  variables = nn.unbox(
      jax.jit(model.init)(
          {"params": jax.random.key(0)}, jnp.zeros((b, n), jnp.int32)
      )
  )
  tx = optax.adam(1e-4)
  state = train.TrainState(
      step=jnp.zeros((), jnp.int32),
      params=variables["params"],
      opt_state=tx.init(variables["params"]),
      kmeans=variables["kmeans"],
      rng=jax.random.key_data(jax.random.key(1)),
  )
  step = jax.jit(
      functools.partial(
          train.train_step, model=model, tx=tx, accum_steps=1, kmeans_weight=1.0
      ),
      donate_argnums=(0,),
  )
  x = jax.random.randint(jax.random.key(2), (b, n + 1), 0, 256)
  batch = {
      "inputs": x[:, :-1],
      "targets": x[:, 1:],
      "weights": jnp.ones((b, n), jnp.float32),
  }
  return cfg, step, state, batch


def ours_train(spec):
  import jax  # pylint: disable=g-import-not-at-top

  n, b = spec["n"], spec["batch"]
  cfg, step, state, batch = ours_train_setup(spec, n, b)
  _block((state, batch))
  base = rss_mb()
  t0 = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  state, metrics = _block(compiled(state, batch))
  first = time.perf_counter() - t0
  losses = [float(metrics["loss"])]
  times = []
  for _ in range(spec["steps"]):
    t0 = time.perf_counter()
    state, metrics = _block(compiled(state, batch))
    times.append(time.perf_counter() - t0)
    losses.append(float(metrics["loss"]))
  layer = state.params["layer_0"]["ffn"]
  return dict(
      summary(times),
      compile_s=compile_s,
      first_step_s=first,
      losses=losses,
      baseline_rss_mb=base,
      peak_rss_mb=rss_mb(),
      params=int(sum(a.size for a in jax.tree.leaves(state.params))),
      ffn_params_per_layer=int(sum(a.size for a in jax.tree.leaves(layer))),
      num_clusters=cfg.routing.num_clusters,
      versions=ours_versions(),
  )


def ours_gen(spec):
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import routing_jax as rj  # pylint: disable=g-import-not-at-top
  from routing_jax.nn import generation  # pylint: disable=g-import-not-at-top

  c, b, tokens = spec["context"], spec["batch"], spec["tokens"]
  # k = c / w as the port derives it; max_len leaves room past the context.
  model = rj.TransformerLM(ours_config(spec, c, max_len=c + tokens + 2))
  variables = nn.unbox(
      jax.jit(model.init)(
          {"params": jax.random.key(0)}, jnp.zeros((1, 2 * WINDOW), jnp.int32)
      )
  )
  prompt = np.random.default_rng(0).integers(0, 256, (b, c), np.int32)
  base = rss_mb()
  # 1. One jitted decode_step call per token after a prefill of c tokens:
  # what a Python sampling loop pays, like the port's generate() loop.
  prefill = jax.jit(generation.prefill_fn(model))
  # Only the cache is donated: the variables are used again below.
  step = jax.jit(generation.decode_step(model), donate_argnums=(1,))
  v, cache = generation.initial_state(model, variables, b)
  t0 = time.perf_counter()
  logits, (_, cache) = _block(prefill((v, cache), jnp.asarray(prompt)))
  prefill_first_s = time.perf_counter() - t0
  tok = jnp.argmax(logits, -1).astype(jnp.int32)
  for i in range(2):  # compile, then one more
    logits, cache = _block(step(v, cache, tok, c + i))
  step_t = []
  for i in range(2, tokens + 2):
    t0 = time.perf_counter()
    logits, cache = _block(step(v, cache, tok, c + i))
    step_t.append(time.perf_counter() - t0)
    tok = jnp.argmax(logits, -1).astype(jnp.int32)

  # 2. generation.sample (prefill + a device-side loop): per-token cost is
  # the slope between a run that samples 1 token and one that samples
  # `tokens` + 1.
  def run(length):
    t0 = time.perf_counter()
    _block(
        generation.sample(
            model, variables, prompt, length, rng=jax.random.key(3)
        ).tokens
    )
    return time.perf_counter() - t0

  short, long_ = c + 1, c + tokens + 1
  run(short), run(long_)  # compile both
  shorts, longs = [], []
  for _ in range(2):
    shorts.append(run(short))
    longs.append(run(long_))
  sample_ms = 1e3 * (min(longs) - min(shorts)) / tokens
  return {
      "ms_per_token": 1e3 * statistics.median(step_t),
      "step_min_ms": 1e3 * min(step_t),
      "step_times_s": step_t,
      "sample_ms_per_token": sample_ms,
      "sample_short_s": shorts,
      "sample_long_s": longs,
      "prefill_first_call_s": prefill_first_s,
      "baseline_rss_mb": base,
      "peak_rss_mb": rss_mb(),
      "versions": ours_versions(),
  }


def ours_leak(spec):
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import routing_jax as rj  # pylint: disable=g-import-not-at-top

  n = spec["n"]
  model = rj.TransformerLM(ours_config(spec, n))
  x = jax.random.randint(jax.random.key(0), (1, n), 0, 256)
  v = nn.unbox(model.init({"params": jax.random.key(1)}, x))
  # One training-mode pass initialises k-means from data, as the port does.
  _, new = model.apply(v, x, train=True, mutable=["kmeans"])
  v = dict(v, kmeans=new["kmeans"])
  ref = model.apply(v, x)[0]
  points = []
  for p in spec["cuts"]:
    y = x.at[:, p:].set(
        jax.random.randint(jax.random.key(p), (1, n - p), 0, 256)
    )
    d = jnp.max(jnp.abs(ref[0, :p] - model.apply(v, y)[0][0, :p]), -1)
    points.append({
        "cut": p,
        "max_abs_logit_change_before_cut": float(d.max()),
        "positions_changed": int((d > 1e-5).sum()),
        "positions": p,
    })
  return {"points": points}


WORKERS = {
    ("port", "train"): port_train,
    ("port", "gen"): port_gen,
    ("port", "leak"): port_leak,
    ("ours", "train"): ours_train,
    ("ours", "gen"): ours_gen,
    ("ours", "leak"): ours_leak,
}


def main():
  spec = json.loads(sys.argv[1])
  rusage0 = rss_mb()
  # "port_passive" is the port run with another OpenMP environment.
  lib = "port" if spec["side"].startswith("port") else "ours"
  if lib == "ours":
    # What `python -m routing_jax.main` runs with (before jax starts).
    from routing_jax import xla_flags  # pylint: disable=g-import-not-at-top

    xla_flags.apply_cpu_defaults()
  out = WORKERS[(lib, spec["kind"])](spec)
  out["env"] = {
      k: v
      for k, v in os.environ.items()
      if k.startswith(("OMP_", "MKL_", "XLA_", "GOMP_"))
  }
  out["rss_at_start_mb"] = rusage0
  out["pid"] = os.getpid()
  print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
  main()
