# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Forward+backward time and peak memory of dense, local and routing attention.

Each (impl, n) point runs in its own subprocess of this script, so peak
memory is per point and an n² blow-up fails alone: on CPU the child's address
space is capped (RLIMIT_AS) and XLA's "Out of memory" is reported as OOM; on
GPU the allocator's own RESOURCE_EXHAUSTED is. All modules include their
projections (Q/K/V and output; routing shares Q and K, as the paper does).

  python benchmarks/attention.py --quick
  python benchmarks/attention.py --sizes 1024,8192 --impls dense,routing_causal

Writes <out>.json (every point plus metadata), <out>.md (the table that is
also printed) and <out>.png (log-log time and memory against n).
"""

import argparse
import datetime
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import machine  # pylint: disable=g-import-not-at-top,wrong-import-position

IMPLS = ("dense", "local", "local_half", "routing_causal", "routing_topk")
DESCRIPTIONS = {
    "dense": "jax.nn.dot_product_attention(is_causal=True) + projections",
    "local": (
        "LocalAttention query_block=w, memory_flange=w (sees w..2w-1 "
        "keys; the same [w x 2w] blocks as causal routing)"
    ),
    "local_half": (
        "LocalAttention query_block=w/2, memory_flange=w/2 (sees "
        "w/2..w-1 keys, never more than routing's w)"
    ),
    "routing_causal": 'RoutingAttention(mode="causal"), k=n/w',
    "routing_topk": 'RoutingAttention(mode="topk"), k=n/w',
}
# Fwd+bwd = 3x the forward matmul FLOPs; fwd = 2 matmuls (logits, PV) of
# 2·d FLOPs per (query, key) pair. XLA's dense path computes the masked half.
FLOP_FORMULAS = {
    "dense_xla": "12*B*H*n^2*d (full n x n: XLA computes the masked half)",
    "dense_cudnn": "6*B*H*n^2*d (causal half: flash skips masked tiles)",
    "local": "12*B*H*n*(q+m)*d with q=m=w",
    "local_half": "12*B*H*n*(q+m)*d with q=m=w/2",
    "routing_causal": "12*B*H*n*(2w)*d (blocks of w queries x 2w keys)",
    "routing_topk": "12*B*H*(k*w)*w*d = 12*B*H*n*w*d",
    "projections": (
        "6*B*n*F*(H*d) per projection (fwd+dx+dW); 4 for dense "
        "and local, 3 for routing (shared Q/K)"
    ),
}
OOM_MARKERS = (
    "out of memory",
    "resource_exhausted",
    "bad_alloc",
    "memoryerror",
    "cannot allocate memory",
)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument(
      "--sizes",
      default="1024,2048,4096,8192,16384,32768",
      help="comma-separated sequence lengths n",
  )
  p.add_argument(
      "--impls",
      default=",".join(IMPLS),
      help=(
          f"comma-separated subset of {IMPLS}; dense_xla and "
          "dense_cudnn pick the dense implementation explicitly"
      ),
  )
  p.add_argument(
      "--dense-impl",
      default="xla",
      choices=("xla", "cudnn"),
      help="implementation= of dot_product_attention for 'dense'",
  )
  p.add_argument(
      "--reps",
      type=int,
      default=0,
      help="timed repetitions; 0: 5 (n<=2k), 3 (4k), 2 (>=8k)",
  )
  p.add_argument(
      "--out",
      default="benchmarks/results/attention_cpu",
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
      help="n in {1024, 2048}, 2 reps: a smoke test",
  )
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--heads", type=int, default=8)
  p.add_argument("--head-dim", type=int, default=64)
  p.add_argument("--window", type=int, default=256)
  p.add_argument(
      "--mem-cap-gb",
      type=float,
      default=17.0,
      help="RLIMIT_AS of each child in GB (0: none; use 0 on GPU)",
  )
  p.add_argument(
      "--predict-cap-gb",
      type=float,
      default=-1.0,
      help=(
          "skip dense_xla points whose predicted n^2 memory "
          "exceeds this (-1: --mem-cap-gb; 0: never skip, run "
          "into the OOM instead)"
      ),
  )
  p.add_argument("--point-timeout", type=float, default=1800.0)
  p.add_argument(
      "--time-budget",
      type=float,
      default=0.0,
      help="seconds; points not started by then are skipped",
  )
  p.add_argument(
      "--reuse",
      action="store_true",
      help=(
          "merge with an existing <out>.json: its points count "
          "as earlier rounds"
      ),
  )
  p.add_argument(
      "--rounds",
      type=int,
      default=1,
      help=(
          "run every point this many times, round-robin, and "
          "keep each point's least contended round"
      ),
  )
  p.add_argument("--matmul-sizes", default="2048,4096")
  # Internal: one point (or the matmul peak) in a child process.
  p.add_argument("--worker", default="", help=argparse.SUPPRESS)
  p.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
  p.add_argument("--result-file", default="", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.quick:
    args.sizes, args.reps = "1024,2048", args.reps or 2
  return args


def reps_for(args, n):
  if args.reps:
    return args.reps
  return 5 if n <= 2048 else 3 if n <= 4096 else 2


def dense_kind(impl, args):
  """'dense' -> dense_<--dense-impl>; dense_xla / dense_cudnn stay."""
  return f"dense_{args.dense_impl}" if impl == "dense" else impl


def core_flops(impl, n, args):
  b, h, d, w = args.batch, args.heads, args.head_dim, args.window
  keys = {
      "dense_xla": n,
      "dense_cudnn": n / 2,
      "local": 2 * w,
      "local_half": w,
      "routing_causal": 2 * w,
      "routing_topk": w,
  }[impl]
  return 12.0 * b * h * n * keys * d


def projection_flops(impl, n, args):
  f = args.heads * args.head_dim
  count = 3 if impl.startswith("routing") else 4
  return 6.0 * args.batch * n * f * f * count


def predicted_dense_bytes(n, args):
  """XLA dense fwd+bwd keeps ~5 f32 [B, H, n, n] buffers (11.2 GB at 8k)."""
  return 5.5 * 4 * args.batch * args.heads * n * n


# ----------------------------------------------------------------- worker --


def _rss_mb():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _current_rss_mb():
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _device_mem():
  import jax  # pylint: disable=g-import-not-at-top

  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("bytes_in_use"), stats.get("peak_bytes_in_use")


def build_module(impl, n, args):
  """The Linen module of one implementation (all include projections)."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import routing_jax as rj  # pylint: disable=g-import-not-at-top
  # pylint: disable-next=g-import-not-at-top
  from routing_jax.nn import attention_core as core

  h, d, w = args.heads, args.head_dim, args.window
  dt = jnp.dtype(args.dtype)

  class DenseAttention(nn.Module):
    """dot_product_attention between LocalAttention-shaped projections."""

    implementation: str

    @nn.compact
    def __call__(self, x):
      proj = lambda name, f, axes: core.head_projection(
          f, axes, dt, jnp.float32, core.default_kernel_init(), name
      )
      q, k, v = (
          core.split_heads(proj(nm, h * d, ("embed", "heads"))(x), h)
          for nm in ("query", "key", "value")
      )
      o = jax.nn.dot_product_attention(
          q, k, v, is_causal=True, implementation=self.implementation
      )
      return proj("out", x.shape[-1], ("heads", "embed"))(
          o.reshape(x.shape[:2] + (h * d,))
      )

  if impl.startswith("dense_"):
    return DenseAttention(impl[len("dense_") :])
  if impl in ("local", "local_half"):
    blk = w if impl == "local" else w // 2
    return rj.LocalAttention(h, d, query_block=blk, memory_flange=blk, dtype=dt)
  if impl.startswith("routing_"):
    return rj.RoutingAttention(
        h,
        d,
        config=rj.RoutingConfig(
            num_clusters=max(1, n // w),
            window=w,
            mode=impl[len("routing_") :],
        ),
        dtype=dt,
    )
  raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")


def run_point(args):
  """Compiles and times jit(value_and_grad(loss wrt params and x))."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  impl, n = args.worker, args.n
  res = {"impl": impl, "n": n}
  module = build_module(impl, n, args)
  routing = impl.startswith("routing_")
  x = jax.random.normal(
      jax.random.key(0),
      (args.batch, n, args.heads * args.head_dim),
      jnp.dtype(args.dtype),
  )
  variables = module.init(jax.random.key(1), x[:, : min(n, 2 * args.window)])
  params, state = variables["params"], {
      k: v for k, v in variables.items() if k != "params"
  }

  def loss_fn(p, x):
    if routing:
      y, aux = module.apply({"params": p, **state}, x, return_aux=True)
      extra = aux["loss"]
    else:
      y, extra = module.apply({"params": p, **state}, x), 0.0
    return jnp.mean(jnp.square(y.astype(jnp.float32))) + extra

  step = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1)))
  jax.block_until_ready((params, x))
  res["baseline_rss_mb"] = _rss_mb()
  res["baseline_current_rss_mb"] = _current_rss_mb()
  base_dev, _ = _device_mem()
  t0 = time.perf_counter()
  compiled = step.lower(params, x).compile()
  res["compile_s"] = time.perf_counter() - t0
  res["after_compile_rss_mb"] = _rss_mb()
  try:
    ma = compiled.memory_analysis()
    res["xla_temp_mb"] = ma.temp_size_in_bytes / 2**20
  except Exception:  # pylint: disable=broad-except
    pass  # not every backend reports it
  t0 = time.perf_counter()
  jax.block_until_ready(compiled(params, x))
  res["first_run_s"] = time.perf_counter() - t0
  times = []
  for _ in range(reps_for(args, n)):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(params, x))
    times.append(time.perf_counter() - t0)
  res.update(
      times_s=times,
      median_s=statistics.median(times),
      min_s=min(times),
      peak_rss_mb=_rss_mb(),
      load_average=os.getloadavg(),
  )
  res["peak_rss_above_baseline_mb"] = (
      res["peak_rss_mb"] - res["baseline_rss_mb"]
  )
  _, peak_dev = _device_mem()
  if peak_dev is not None:
    res.update(
        device_baseline_mb=base_dev / 2**20,
        device_peak_mb=peak_dev / 2**20,
        device_peak_above_baseline_mb=(peak_dev - base_dev) / 2**20,
    )
  return res


def run_matmul(args):
  """Median time of jit(jnp.dot) on square matrices: the machine's peak."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  out = {"dtype": args.dtype, "sizes": {}}
  dot = jax.jit(jnp.dot)
  for m in (int(s) for s in args.matmul_sizes.split(",")):
    a, b = (
        jax.random.normal(jax.random.key(i), (m, m), jnp.dtype(args.dtype))
        for i in (0, 1)
    )
    jax.block_until_ready(dot(a, b))
    reps = 20 if m <= 2048 else 10
    times = []
    for _ in range(reps):
      t0 = time.perf_counter()
      jax.block_until_ready(dot(a, b))
      times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    out["sizes"][str(m)] = {
        "median_s": med,
        "gflops": 2 * m**3 / med / 1e9,
        "best_gflops": 2 * m**3 / min(times) / 1e9,
    }
  out["peak_gflops"] = max(v["gflops"] for v in out["sizes"].values())
  dev = jax.devices()[0]
  out["device"] = {
      "platform": dev.platform,
      "kind": dev.device_kind,
      "jax": jax.__version__,
  }
  return out


def worker_main(args):
  try:
    res = run_matmul(args) if args.worker == "matmul" else run_point(args)
    res["status"] = "ok"
  except Exception as e:  # pylint: disable=broad-except
    msg = f"{type(e).__name__}: {e}"
    oom = any(m in msg.lower() for m in OOM_MARKERS)
    res = {
        "impl": args.worker,
        "n": args.n,
        "status": "oom" if oom else "error",
        "error": msg[:2000],
    }
  with open(args.result_file, "w") as f:
    json.dump(res, f)


# ----------------------------------------------------------------- driver --


def spawn(args, worker, n):
  """Runs one point in a child process; returns its result dict."""
  fd, path = tempfile.mkstemp(suffix=".json")
  os.close(fd)
  cmd = (
      [sys.executable, os.path.abspath(__file__)]
      + sys.argv[1:]
      + ["--worker", worker, "--n", str(n), "--result-file", path]
  )
  cap = int(args.mem_cap_gb * 2**30)

  def limit():
    if cap > 0:
      resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

  t0 = time.perf_counter()
  try:
    proc = subprocess.run(
        cmd,
        preexec_fn=limit,
        capture_output=True,
        text=True,
        timeout=args.point_timeout,
        check=False,
    )
    rc, err = proc.returncode, proc.stderr
  except subprocess.TimeoutExpired:
    rc, err = None, "timeout"
  wall = time.perf_counter() - t0
  try:
    with open(path) as f:
      res = json.load(f)
  except (OSError, ValueError):
    tail = (err or "")[-1500:]
    oom = rc is not None and (
        rc in (-9, 137) or any(m in tail.lower() for m in OOM_MARKERS)
    )
    res = {
        "impl": worker,
        "n": n,
        "returncode": rc,
        "status": "timeout" if rc is None else "oom" if oom else "error",
        "error": tail,
    }
  finally:
    os.unlink(path)
  res["process_wall_s"] = wall
  return res


def add_rates(res, impl, args, peak):
  n = res["n"]
  res["core_gflop"] = core_flops(impl, n, args) / 1e9
  res["projection_gflop"] = projection_flops(impl, n, args) / 1e9
  if res.get("status") == "ok" and peak:
    t = res["median_s"]
    res["core_gflops"] = res["core_gflop"] / t
    res["core_fraction_of_matmul_peak"] = res["core_gflops"] / peak
    total = res["core_gflop"] + res["projection_gflop"]
    res["total_gflops"] = total / t
    res["total_fraction_of_matmul_peak"] = res["total_gflops"] / peak
  return res


def mem_of(r):
  """The memory a point adds: device peak on GPU, else peak RSS increase."""
  return r.get(
      "device_peak_above_baseline_mb", r.get("peak_rss_above_baseline_mb")
  )


def table(points, args):
  """Markdown table with time and memory ratios vs dense and vs local."""
  ok = {(p["impl"], p["n"]): p for p in points if p.get("status") == "ok"}
  dense = next(
      (i for i in ("dense_cudnn", "dense_xla") if any(k[0] == i for k in ok)),
      None,
  )
  gpu = any("device_peak_mb" in p for p in ok.values())
  mem_name = "device peak MB" if gpu else "peak RSS MB"
  rows = [
      (
          f"| n | impl | median s | min s | compile s | {mem_name} (+base) | "
          "x faster than dense | mem / dense | time / local | "
          "time / local_half | core GFLOP/s | core % of peak |"
      ),
      "|" + "---|" * 12,
  ]
  fmt = lambda v, f: "" if v is None else format(v, f)
  for p in sorted(points, key=lambda p: (p["n"], p["impl"])):
    n, impl = p["n"], p["impl"]
    if p.get("status") != "ok":
      why = p.get("status", "?").upper()
      detail = (p.get("reason") or p.get("error") or "").splitlines()
      rows.append(
          f"| {n} | {impl} | **{why}** | | | "
          f"{(detail[-1] if detail else '')[:70]} | | | | | | |"
      )
      continue
    d, lo, lh = (ok.get((i, n)) for i in (dense, "local", "local_half"))
    ratio = lambda a, b: a / b if a and b else None
    mem = mem_of(p)
    base = p.get("device_baseline_mb", p.get("baseline_rss_mb"))
    rows.append(
        f"| {n} | {impl} | {p['median_s']:.4g} | {p['min_s']:.4g} | "
        f"{p['compile_s']:.3g} | {mem:.0f} (+{base:.0f}) | "
        f"{fmt(ratio(d and d['median_s'], p['median_s']), '.2f')} | "
        f"{fmt(ratio(mem, d and mem_of(d)), '.3f')} | "
        f"{fmt(ratio(p['median_s'], lo and lo['median_s']), '.2f')} | "
        f"{fmt(ratio(p['median_s'], lh and lh['median_s']), '.2f')} | "
        f"{fmt(p.get('core_gflops'), '.3g')} | "
        f"{fmt(100 * p.get('core_fraction_of_matmul_peak', 0), '.1f')} |"
    )
  return "\n".join(rows) + "\n"


def plot(points, path, title):
  """Log-log time and memory against n; x marks OOM or predicted OOM."""
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("matplotlib missing: no plot", file=sys.stderr)
    return
  fig, axes = plt.subplots(1, 2, figsize=(12, 5))
  for impl in sorted({p["impl"] for p in points}):
    pts = [p for p in points if p["impl"] == impl and p["status"] == "ok"]
    if not pts:
      continue
    ns = [p["n"] for p in pts]
    for ax, ys in zip(
        axes, ([p["median_s"] for p in pts], [max(mem_of(p), 1.0) for p in pts])
    ):
      (line,) = ax.plot(ns, ys, "o-", label=impl)
      failed = [
          p["n"]
          for p in points
          if p["impl"] == impl and p["status"] in ("oom", "skipped")
      ]
      ax.plot(
          failed,
          [max(ys)] * len(failed),
          "x",
          markersize=10,
          color=line.get_color(),
      )
      if impl == "local":  # a slope-1 guide: linear growth
        ax.plot(ns, [ys[0] * m / ns[0] for m in ns], "k:", label="∝ n")
  for ax, ylabel in zip(
      axes, ("fwd+bwd median seconds", "peak memory above baseline, MB")
  ):
    ax.set(
        xscale="log", yscale="log", xlabel="sequence length n", ylabel=ylabel
    )
    ax.set_xscale("log", base=2)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
  fig.suptitle(title, fontsize=9, wrap=True)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def merge(prev, res):
  """Keeps the least contended round of a point: the lowest median."""
  ok = lambda r: r is not None and r.get("status") == "ok"
  if not ok(res):
    return prev if ok(prev) else res
  rounds = (
      prev.get("round_medians", [prev["median_s"]]) if ok(prev) else []
  ) + [res["median_s"]]
  best = dict(prev if ok(prev) and prev["median_s"] <= res["median_s"] else res)
  best["round_medians"] = rounds
  return best


def driver_main(args):
  sizes = [int(s) for s in args.sizes.split(",")]
  impls = [dense_kind(i.strip(), args) for i in args.impls.split(",")]
  prefix = args.out
  os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
  points, old_meta = {}, {}
  if args.reuse and os.path.exists(prefix + ".json"):
    with open(prefix + ".json") as f:
      old = json.load(f)
    old_meta = old["meta"]
    points = {(p["impl"], p["n"]): p for p in old["points"]}
  start = time.perf_counter()
  print("measuring matmul peak ...", flush=True)
  mm = spawn(args, "matmul", 0)
  import jax  # pylint: disable=g-import-not-at-top  # version only

  meta = {
      "date": datetime.datetime.now().isoformat(timespec="seconds"),
      "device": mm.get("device"),
      "device_label": args.device_label,
      "jax": jax.__version__,
      **machine.describe(),
      "load_average_at_start": os.getloadavg(),
      "config": {
          k: getattr(args, k)
          for k in (
              "batch",
              "heads",
              "head_dim",
              "window",
              "dtype",
              "dense_impl",
              "mem_cap_gb",
              "predict_cap_gb",
              "sizes",
              "impls",
              "rounds",
          )
      },
      "descriptions": DESCRIPTIONS,
      "flop_formulas": FLOP_FORMULAS,
      "method": (
          "one subprocess per point; jit(value_and_grad(mean(y^2) + "
          "aux loss, wrt params and x)); compile (lower+compile) and "
          "first run timed separately; median of reps; with several "
          "rounds (or --reuse runs) the round with the lowest median "
          "is kept, all round medians listed; peak memory = "
          "ru_maxrss (CPU) or allocator peak_bytes_in_use (GPU) minus "
          "a baseline taken after imports, params and inputs exist; "
          "core GFLOP/s = analytic core FLOPs / whole-step median "
          "time (projections and k-means included in the time)"
      ),
      "matmul_peak": mm,
  }
  if old_meta:
    meta["previous_runs"] = old_meta.pop("previous_runs", []) + [old_meta]
  peaks = [
      m["matmul_peak"].get("peak_gflops")
      for m in meta.get("previous_runs", []) + [meta]
  ]
  peak = max((p for p in peaks if p), default=None)
  meta["matmul_peak_gflops_used"] = peak
  cap_gb = args.mem_cap_gb if args.predict_cap_gb < 0 else args.predict_cap_gb

  def ordered():
    return [
        add_rates(p, p["impl"], args, peak)
        for _, p in sorted(points.items(), key=lambda kv: kv[0][::-1])
    ]

  def save():
    meta["load_average_at_end"] = os.getloadavg()
    with open(prefix + ".json", "w") as f:
      json.dump({"meta": meta, "points": ordered()}, f, indent=1)

  def report(final):
    pts = ordered()
    dev = meta["device"] or {}
    md = table(pts, args)
    with open(prefix + ".md", "w") as f:
      f.write(
          f"{dev.get('kind')} ({dev.get('platform')}), jax "
          f"{dev.get('jax')}, {args.device_label}, dtype={args.dtype}, "
          f"matmul peak {peak and round(peak, 1)} GFLOP/s\n\n"
          + md
      )
    save()
    if final:
      print(md)
      plot(
          pts,
          prefix + ".png",
          f"B={args.batch} H={args.heads} d={args.head_dim} "
          f"w={args.window} {args.dtype} fwd+bwd (x: OOM or predicted "
          f"OOM), {dev.get('kind')} jax {dev.get('jax')}: "
          f"{args.device_label}",
      )

  # A `timeout` around this script still gets the table and the plot.
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
  try:
    for rnd in range(args.rounds):
      for n in sizes:
        for impl in impls:
          if (
              impl == "dense_xla"
              and cap_gb > 0
              and predicted_dense_bytes(n, args) > cap_gb * 2**30
          ):
            res = {
                "impl": impl,
                "n": n,
                "status": "skipped",
                "reason": (
                    f"predicted {predicted_dense_bytes(n, args) / 2**30:.0f}"
                    f" GB > {cap_gb:g} GB"
                ),
            }
          elif (
              args.time_budget
              and time.perf_counter() - start > args.time_budget
          ):
            res = {
                "impl": impl,
                "n": n,
                "status": "skipped",
                "reason": "time budget",
            }
          else:
            res = spawn(args, impl, n)
          points[(impl, n)] = merge(points.get((impl, n)), res)
          shown = (
              f"{res['median_s']:.4g} s, {mem_of(res):.0f} MB"
              if res.get("status") == "ok"
              else (
                  f"{res['status']} {res.get('reason', '')}"
                  f"{res.get('error', '')[-150:]}"
              )
          )
          print(f"round {rnd} n={n:6d} {impl:15s} {shown}", flush=True)
          report(final=False)
  finally:
    report(final=True)


def main():
  args = parse_args()
  if args.worker:
    worker_main(args)
  else:
    driver_main(args)


if __name__ == "__main__":
  main()
