# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Fused Pallas routing kernel vs the XLA routing core vs cuDNN dense, on GPU.

Two measurements, each point in its own subprocess (so peak memory is per
point and an out-of-memory failure stays local):

  core:    forward+backward time and peak memory of the attention core
           alone, bf16, B=1, H=8, d=64, w=256, k = n / w clusters:
           routing_kernel (Pallas), routing_core (XLA) and
           jax.nn.dot_product_attention(is_causal=True, implementation=
           "cudnn"), n = 8k, 16k, 32k, 64k, ... until each fails.
  longest: the longest n at which one RoutingAttention layer (projections,
           k-means with its EMA update, the causal core) runs a training
           step (gradients w.r.t. its parameters), per implementation:
           doubling from --longest-start, then bisecting to 1/8 of the
           last step.

  python benchmarks/kernel_gpu.py --out kernel_gpu.json     # on a GPU
  python benchmarks/kernel_gpu.py --smoke                   # CPU, seconds

--smoke runs tiny sizes in-process with the Pallas interpreter (dense via
XLA, as cuDNN needs a GPU): it checks that the script runs, not speed.
Prints one JSON object (also written to --out).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

OOM_MARKERS = (
    "out of memory",
    "resource_exhausted",
    "resource exhausted",
    "bad_alloc",
    "cannot allocate memory",
)
IMPLS = ("pallas", "xla", "cudnn")


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument(
      "--sizes",
      default="8192,16384,32768,65536,131072,262144",
      help="core: comma-separated n (each impl stops at its first failure)",
  )
  p.add_argument("--impls", default=",".join(IMPLS))
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--heads", type=int, default=8)
  p.add_argument("--head-dim", type=int, default=64)
  p.add_argument("--window", type=int, default=256)
  p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
  p.add_argument("--block-q", type=int, default=64)
  p.add_argument("--block-k", type=int, default=64)
  p.add_argument("--num-warps", type=int, default=4)
  p.add_argument("--num-stages", type=int, default=2)
  p.add_argument("--reps", type=int, default=10)
  p.add_argument("--longest-start", type=int, default=65536)
  p.add_argument("--longest-max", type=int, default=1 << 24)
  p.add_argument("--longest-impls", default="pallas,xla")
  p.add_argument("--point-timeout", type=float, default=600.0)
  p.add_argument(
      "--time-budget",
      type=float,
      default=1500.0,
      help="seconds; later points are recorded as skipped",
  )
  p.add_argument("--out", default="")
  p.add_argument(
      "--smoke",
      action="store_true",
      help="tiny sizes, interpreter, in-process (CPU)",
  )
  p.add_argument("--worker", default="", help=argparse.SUPPRESS)
  p.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  args.argv = list(sys.argv[1:] if argv is None else argv)
  if args.smoke:
    args.sizes, args.heads, args.head_dim, args.window = "64", 2, 16, 16
    args.block_q = args.block_k = 16
    args.reps, args.longest_start, args.longest_max = 1, 64, 128
  return args


# ---------------------------------------------------------------- workers


def _clusters(n, args):
  import jax  # pylint: disable=g-import-not-at-top

  k = max(1, n // args.window)
  return (
      jax.random.randint(jax.random.key(2), (args.batch, args.heads, n), 0, k),
      k,
  )


def _core_fn(impl, n, args):
  """f(q, k, v) -> o of one attention core, [b, n, h, d] in and out."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from routing_jax.nn import routing_core  # pylint: disable=g-import-not-at-top
  # pylint: disable-next=g-import-not-at-top
  from routing_jax.nn import routing_kernel

  dt = jnp.dtype(args.dtype)
  clusters, k = _clusters(n, args)
  common = dict(num_clusters=k, window=args.window, dtype=dt)
  if impl == "pallas":
    return lambda q, k_, v: routing_kernel.causal_routing_attention(
        q,
        k_,
        v,
        clusters,
        None,
        block_q=args.block_q,
        block_k=args.block_k,
        num_warps=args.num_warps,
        num_stages=args.num_stages,
        **common,
    )
  if impl == "xla":
    return lambda q, k_, v: routing_core.causal_routing_attention(
        q, k_, v, clusters, None, **common
    )
  dense = "xla" if args.smoke else "cudnn"  # cuDNN needs a GPU
  return lambda q, k_, v: jax.nn.dot_product_attention(
      q, k_, v, is_causal=True, implementation=dense
  )


def _time(step, inputs, reps):
  """Compile time and the median of `reps` timed calls, in seconds."""
  import jax  # pylint: disable=g-import-not-at-top

  t = time.perf_counter()
  compiled = step.lower(*inputs).compile()
  compile_s = time.perf_counter() - t
  jax.block_until_ready(compiled(*inputs))  # warm-up
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(compiled(*inputs))
    times.append(time.perf_counter() - t)
  return compile_s, statistics.median(times)


def _peak_bytes():
  import jax  # pylint: disable=g-import-not-at-top

  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


def core_point(impl, n, args):
  """Forward+backward of one core at length n."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  dt = jnp.dtype(args.dtype)
  shape = (args.batch, n, args.heads, args.head_dim)
  keys = jax.random.split(jax.random.key(0), 4)
  q, k, v, ct = (jax.random.normal(key, shape, dt) for key in keys)
  if impl != "cudnn":  # routing takes normalised q, k
    norm = lambda a: (
        a
        / jnp.sqrt(
            jnp.mean(jnp.square(a.astype(jnp.float32)), -1, keepdims=True)
        )
    ).astype(dt)
    q, k = norm(q), norm(k)
  fn = _core_fn(impl, n, args)

  def step(q, k, v, ct):
    o, vjp = jax.vjp(fn, q, k, v)
    return vjp(ct.astype(o.dtype))

  compile_s, sec = _time(jax.jit(step), (q, k, v, ct), args.reps)
  return {
      "compile_s": round(compile_s, 3),
      "fwd_bwd_ms": sec * 1e3,
      "peak_bytes": _peak_bytes(),
  }


def layer_point(impl, n, args):
  """One RoutingAttention training step (grads + k-means update)."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import routing_jax as rj  # pylint: disable=g-import-not-at-top

  dt = jnp.dtype(args.dtype)
  module = rj.RoutingAttention(
      args.heads,
      args.head_dim,
      config=rj.RoutingConfig(
          num_clusters=max(1, n // args.window),
          window=args.window,
          position="none",
          implementation=impl,
          kernel_block_sizes=(args.block_q, args.block_k),
      ),
      dtype=dt,
  )
  x = jax.random.normal(
      jax.random.key(0), (args.batch, n, args.heads * args.head_dim), dt
  )
  variables = nn.unbox(jax.jit(module.init)(jax.random.key(1), x[:, :512]))

  def step(variables, x):
    def loss(params):
      y, state = module.apply(
          {**variables, "params": params},
          x,
          train=True,
          mutable=["kmeans", "aux_loss"],
      )
      return jnp.mean(jnp.square(y.astype(jnp.float32))), state

    return jax.grad(loss, has_aux=True)(variables["params"])

  compile_s, sec = _time(jax.jit(step), (variables, x), max(1, args.reps // 5))
  return {
      "compile_s": round(compile_s, 3),
      "step_ms": sec * 1e3,
      "peak_bytes": _peak_bytes(),
  }


def run_worker(kind, impl, n, args):
  fn = core_point if kind == "core" else layer_point
  try:
    return {"status": "ok", **fn(impl, n, args)}
  except Exception as e:  # pylint: disable=broad-except
    text = f"{type(e).__name__}: {e}"
    oom = any(m in text.lower() for m in OOM_MARKERS)
    return {"status": "oom" if oom else "error", "error": text[:500]}


# ----------------------------------------------------------------- driver


def measure(kind, impl, n, args):
  """One point: in-process (smoke) or in a fresh subprocess."""
  if args.smoke:
    return run_worker(kind, impl, n, args)
  cmd = [
      sys.executable,
      os.path.abspath(__file__),
      *args.argv,
      "--worker",
      f"{kind}:{impl}",
      "--n",
      str(n),
  ]
  env = dict(os.environ)
  env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")
  try:
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env=env,
        timeout=args.point_timeout,
        check=False,
    )
  except subprocess.TimeoutExpired:
    return {"status": "timeout"}
  lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
  if lines:
    return json.loads(lines[-1])
  tail = (proc.stderr or proc.stdout)[-500:]
  oom = proc.returncode < 0 or any(m in tail.lower() for m in OOM_MARKERS)
  return {"status": "oom" if oom else "error", "error": tail}


def longest(impl, args, deadline, log):
  """Largest n (a multiple of the window) whose training step fits."""
  w, ok, bad, n = args.window, 0, 0, args.longest_start
  while n <= args.longest_max and time.time() < deadline:
    r = measure("layer", impl, n, args)
    log.append({"kind": "layer", "impl": impl, "n": n, **r})
    if r["status"] != "ok":
      bad = n
      break
    ok, n = n, 2 * n
  step = (bad - ok) // 2
  while ok and bad and step >= max(w, ok // 8) and time.time() < deadline:
    n = (ok + step) // w * w
    r = measure("layer", impl, n, args)
    log.append({"kind": "layer", "impl": impl, "n": n, **r})
    ok = n if r["status"] == "ok" else ok
    step //= 2
  return {"impl": impl, "longest_n": ok, "first_failure_n": bad or None}


def main(argv=None):
  args = parse_args(argv)
  if args.smoke:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
  if args.worker:
    kind, impl = args.worker.split(":")
    print(json.dumps(run_worker(kind, impl, args.n, args)))
    return
  import jax  # pylint: disable=g-import-not-at-top

  deadline = time.time() + args.time_budget
  points, failed = [], set()
  for n in (int(s) for s in args.sizes.split(",")):
    for impl in args.impls.split(","):
      if impl in failed or time.time() > deadline:
        points.append(
            {"kind": "core", "impl": impl, "n": n, "status": "skipped"}
        )
        continue
      r = {
          "kind": "core",
          "impl": impl,
          "n": n,
          **measure("core", impl, n, args),
      }
      points.append(r)
      print(json.dumps(r), file=sys.stderr, flush=True)
      if r["status"] != "ok":
        failed.add(impl)
  layers = []
  results = [
      longest(impl, args, deadline, layers)
      for impl in args.longest_impls.split(",")
  ]
  report = {
      "device": jax.devices()[0].device_kind,
      "jax": jax.__version__,
      "python": platform.python_version(),
      "smoke": args.smoke,
      "shape": dict(
          batch=args.batch,
          heads=args.heads,
          head_dim=args.head_dim,
          window=args.window,
          dtype=args.dtype,
          clusters="n / window",
      ),
      "kernel": dict(
          block_q=args.block_q,
          block_k=args.block_k,
          num_warps=args.num_warps,
          num_stages=args.num_stages,
      ),
      "core_fwd_bwd": points,
      "layer_steps": layers,
      "longest": results,
  }
  text = json.dumps(report, indent=1)
  print(text)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  main()
