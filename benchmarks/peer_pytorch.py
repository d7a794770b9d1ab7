# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""routing-jax vs the PyTorch port (routing-transformer 1.6.1), side by side.

The same model on both sides: bytes (vocab 256), 6 layers, d_model 512, 8
heads of 64, every head a causal routing head with window w = 128 and
k = n / 128 clusters (the port derives k = max_seq_len // window_size),
pre-norm, rotary positions, GEGLU feed-forward of width 4·d_model with
biases (ffn_bias=True on our side, as the port's), no dropout, batch 1,
Adam. Ours runs with the XLA flags `python -m routing_jax.main` sets
(routing_jax/xla_flags.py; the exact XLA_FLAGS are in the JSON).

Measured, one child process per point (so peak RSS is per point), the two
libraries interleaved point by point and every point repeated in --rounds
rounds (the machine is shared: each point keeps its fastest round, and the
spread between rounds is reported):
  train  seconds per training step (forward, backward, k-means update,
         Adam) at each n, after warm-up / compilation; peak RSS.
  gen    ms per generated token at context 1024, batch 1 and 8. The port's
         AutoregressiveWrapper.generate re-runs the whole forward per token;
         ours is one cached generation.decode_step call per token (and, as a
         second number, the slope of generation.sample).
  leak   once, on a small model: does the logit at position i change when
         only tokens after i change (eval mode)?

The port and torch live in their own virtualenv (--peer-venv, created on
first use with pip) and are imported only in its child processes, so this
script runs, and --help works, without torch.

  python benchmarks/peer_pytorch.py                # full run, ~30-60 min
  python benchmarks/peer_pytorch.py --quick        # n = 1024, one round

Time to quality (--quality; peer_quality.py, peer_quality_workers.py): both
libraries train the same 4-layer model (2 local + 2 routing heads) on the
embedded corpus for --budget seconds each, per seed, with each side's
recipe and the same recipe; validation bits/byte against wall time, and the
port also scored causally so that its future leak shows:

  python benchmarks/peer_pytorch.py --quality --budget 600 --seeds 0,1,2 \
      --runs port:adam_const,port:adamw_cos,ours:adamw_cos
  # A variant of ours: +FIELD=VALUE sets a ModelConfig or RoutingConfig field
  python benchmarks/peer_pytorch.py --quality --budget 300 --seeds 0 \
      --runs ours:adamw_cos,ours+logit_scale=0.125:adamw_cos
  # Merge result files into one report:
  python benchmarks/peer_pytorch.py --quality --report a.json,b.json --out r

Writes <out>.json (machine, versions, load, every round), <out>.md (tables)
and <out>.png (time and memory vs n, log-log; generation ms/token).
"""

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKER = os.path.join(HERE, "peer_workers.py")
PEER_REQUIREMENTS = ("torch==2.13.0", "routing-transformer==1.6.1", "numpy")
# The port with torch's default OpenMP settings, and with OMP_WAIT_POLICY=
# PASSIVE: on a shared CPU, libgomp's spin-waiting threads make every torch
# op wait for a descheduled thread (measured here: a forward 5x slower).
PORT_ENV = {
    "port": {},
    "port_passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "port_1thread": {"OMP_NUM_THREADS": "1"},
}
sys.path.insert(0, HERE)
import peer_quality  # pylint: disable=g-import-not-at-top,wrong-import-position
import peer_report  # pylint: disable=g-import-not-at-top,wrong-import-position


def parse_args(argv=None):
  p = argparse.ArgumentParser(
      description=__doc__.split("\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog="\n".join(__doc__.split("\n")[1:]),
  )
  p.add_argument(
      "--sizes",
      default="1024,2048,4096,8192",
      help="comma-separated sequence lengths (multiples of 128)",
  )
  p.add_argument(
      "--rounds",
      type=int,
      default=3,
      help="repeat every point this many times, interleaved",
  )
  p.add_argument(
      "--steps",
      type=int,
      default=0,
      help=(
          "timed training steps per child after warm-up "
          "(0: 3 up to n = 2048, 2 beyond)"
      ),
  )
  p.add_argument(
      "--port-variants",
      default="port,port_passive",
      help=(
          "port: torch's defaults; port_passive: with "
          "OMP_WAIT_POLICY=PASSIVE; port_1thread: with "
          "OMP_NUM_THREADS=1"
      ),
  )
  p.add_argument(
      "--report",
      default="",
      help=(
          "only rewrite .md and .png from this JSON; several (comma-"
          "separated): their runs merged into --out"
      ),
  )
  p.add_argument("--gen-context", type=int, default=1024)
  p.add_argument("--gen-batches", default="1,8")
  p.add_argument(
      "--gen-tokens-port",
      type=int,
      default=4,
      help="tokens the port generates per timed call",
  )
  p.add_argument(
      "--gen-tokens-ours",
      type=int,
      default=64,
      help="timed cached steps (and sample() slope length)",
  )
  p.add_argument("--no-gen", action="store_true")
  p.add_argument("--no-leak", action="store_true")
  p.add_argument(
      "--layers", type=int, default=0, help="0: 6 (speed), 4 (--quality)"
  )
  p.add_argument(
      "--d-model", type=int, default=0, help="0: 512 (speed), 256 (--quality)"
  )
  p.add_argument(
      "--heads", type=int, default=0, help="0: 8 (speed), 4 (--quality)"
  )
  p.add_argument(
      "--local-heads",
      type=int,
      default=-1,
      help=(
          "local heads per layer, the rest route; -1: 0 (speed), 2 (--quality)"
      ),
  )
  p.add_argument(
      "--d-ff",
      type=int,
      default=0,
      help=(
          "our GEGLU width; 0: 4·d_model, the port's (ff_mult=4), "
          "with biases as the port's"
      ),
  )
  p.add_argument(
      "--position",
      default="rope",
      choices=("rope", "relative", "none"),
      help="our positions; the port's routing heads use rotary",
  )
  p.add_argument(
      "--timeout",
      type=int,
      default=1800,
      help="seconds per child before it is killed and recorded",
  )
  p.add_argument(
      "--peer-venv",
      default=os.path.join(HERE, ".peer-venv"),
      help="virtualenv for torch + the port (created if missing)",
  )
  p.add_argument(
      "--peer-python",
      default="",
      help=(
          "use this interpreter for the port instead of the "
          "venv (it must import torch and routing_transformer)"
      ),
  )
  p.add_argument("--ours-python", default=sys.executable)
  p.add_argument(
      "--out",
      default="",
      help=(
          "output prefix (default benchmarks/results/"
          "peer_pytorch, or peer_pytorch_quick with --quick)"
      ),
  )
  p.add_argument("--label", default="", help="free text for the JSON")
  q = p.add_argument_group(
      "time to quality (--quality): both libraries train for --budget"
      " seconds on the embedded corpus (peer_quality.py)"
  )
  q.add_argument("--quality", action="store_true")
  q.add_argument("--budget", type=float, default=600.0, help="seconds per run")
  q.add_argument("--seeds", default="0,1,2")
  q.add_argument(
      "--runs",
      default="port:adam_const,ours:adamw_cos",
      help=(
          "SIDE:RECIPE[@LR],...: adam_const is the port's example recipe"
          " (Adam 1e-4, clip 0.5), adamw_cos ours (experiments/shakespeare.py:"
          " AdamW, warm-up, cosine over the budget)"
      ),
  )
  q.add_argument("--quality-n", type=int, default=1024)
  q.add_argument("--batch", type=int, default=8)
  q.add_argument("--evals", type=int, default=8, help="curve points per run")
  q.add_argument(
      "--curve-windows",
      type=int,
      default=32,
      help="validation windows scored at each curve point",
  )
  q.add_argument("--causal-windows", type=int, default=32)
  q.add_argument("--causal-positions", type=int, default=32)
  p.add_argument(
      "--quick",
      action="store_true",
      help="n = 1024 only, one round, 2 timed steps",
  )
  args = p.parse_args(argv)
  quality = args.quality
  args.layers = args.layers or (4 if quality else 6)
  args.d_model = args.d_model or (256 if quality else 512)
  args.heads = args.heads or (4 if quality else 8)
  if args.local_heads < 0:
    args.local_heads = 2 if quality else 0
  if not 0 <= args.local_heads <= args.heads:
    p.error("--local-heads: between 0 and --heads")
  args.seeds = [int(s) for s in args.seeds.split(",") if s]
  try:
    peer_quality.parse_runs(args.runs)
  except ValueError as e:
    p.error(str(e))
  if args.quality_n % 128:
    p.error("--quality-n must be a multiple of 128 (window)")
  if args.quick:
    args.sizes, args.rounds, args.steps = "1024", 1, 2
    args.gen_tokens_port, args.gen_tokens_ours = 4, 16
  args.sizes = [int(s) for s in args.sizes.split(",")]
  args.gen_batches = [int(b) for b in args.gen_batches.split(",")]
  args.sides = [v for v in args.port_variants.split(",") if v] + ["ours"]
  if any(v not in PORT_ENV for v in args.sides[:-1]):
    p.error(f"--port-variants: choose from {sorted(PORT_ENV)}")
  if any(n % 128 for n in args.sizes + [args.gen_context]):
    p.error("--sizes and --gen-context must be multiples of 128 (window)")
  args.d_ff = args.d_ff or 4 * args.d_model
  default_out = "peer_pytorch_quick" if args.quick else "peer_pytorch"
  args.out = args.out or os.path.join(
      HERE, "results", "peer_quality" if quality else default_out
  )
  return args


# ------------------------------------------------------------ environment


def _run_quiet(cmd, what):
  r = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if r.returncode:
    sys.exit(
        f"peer_pytorch: {what} failed (exit {r.returncode}): "
        f"{' '.join(cmd)}\n{(r.stdout + r.stderr)[-3000:]}"
    )
  return r.stdout


def peer_python(args):
  """The port's interpreter; creates and fills --peer-venv on first use."""
  check = (
      "import torch, routing_transformer, numpy, importlib.metadata "
      "as m; print(torch.__version__, m.version('routing-transformer'))"
  )
  if args.peer_python:
    py = args.peer_python
  else:
    py = os.path.join(args.peer_venv, "bin", "python")
    if not os.path.exists(py):
      print(f"creating {args.peer_venv}", flush=True)
      _run_quiet(
          [sys.executable, "-m", "venv", args.peer_venv],
          "creating the peer virtualenv",
      )
    ready = (
        subprocess.run(
            [py, "-c", check], capture_output=True, check=False
        ).returncode
        == 0
    )
    if not ready:
      print(
          f"installing {' '.join(PEER_REQUIREMENTS)} into "
          f"{args.peer_venv} (a few minutes)",
          flush=True,
      )
      _run_quiet(
          [py, "-m", "pip", "install", "-q", *PEER_REQUIREMENTS],
          "installing the port into the peer virtualenv (the CPU "
          "torch wheel must be reachable: pip install torch==2.13.0)",
      )
  out = _run_quiet(
      [py, "-c", check],
      f"importing torch, routing_transformer and numpy with {py}",
  )
  print(f"port interpreter {py}: torch, routing-transformer = {out.strip()}")
  return py


def machine_info(peer_py):
  info = {
      "platform": platform.platform(),
      "cpu_count": os.cpu_count(),
      "python": platform.python_version(),
  }
  try:
    with open("/proc/cpuinfo") as f:
      info["cpu"] = next(
          l.split(":", 1)[1].strip() for l in f if l.startswith("model name")
      )
    with open("/proc/meminfo") as f:
      info["mem_total_kb"] = int(f.readline().split()[1])
  except (OSError, StopIteration):
    pass
  freeze = subprocess.run(
      [peer_py, "-m", "pip", "freeze"],
      capture_output=True,
      text=True,
      check=False,
  )
  info["peer_pip_freeze"] = freeze.stdout.split()
  return info


def uptime():
  return subprocess.run(
      ["uptime"], capture_output=True, text=True, check=False
  ).stdout.strip()


# ------------------------------------------------------------ children


def run_child(py, spec, timeout, worker=WORKER):
  """Runs one point in a fresh process; failures are returned, not raised."""
  env = dict(os.environ)
  if spec["side"] == "ours":  # the checkout, even if not pip-installed
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env.update(PORT_ENV.get(spec["side"], {}))
  rec = {"spec": spec, "load_before": os.getloadavg()}
  t0 = time.perf_counter()
  # A new session, so that a timeout kills the child's whole group.
  proc = subprocess.Popen(
      [py, worker, json.dumps(spec)],
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      start_new_session=True,
  )
  try:
    out, err = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    out, err = proc.communicate()
    rec["status"] = "timeout"
  rec["wall_s"] = time.perf_counter() - t0
  rec["load_after"] = os.getloadavg()
  result = [l for l in out.splitlines() if l.startswith("RESULT ")]
  if result:
    rec.update(status="ok", result=json.loads(result[-1][7:]))
  elif "status" not in rec:
    oom = proc.returncode == -signal.SIGKILL or any(
        s in err
        for s in (
            "MemoryError",
            "RESOURCE_EXHAUSTED",
            "bad_alloc",
            "Out of memory",
            "out of memory",
        )
    )
    rec["status"] = "oom" if oom else "error"
    rec["returncode"] = proc.returncode
  if rec["status"] != "ok":
    rec["stderr_tail"] = err[-2000:]
  return rec


def describe(rec):
  s = rec["spec"]
  where = f"n={s['n']}" if "n" in s else f"b={s.get('batch')}"
  head = (
      f"[{s['kind']} {s['side']:4s} {where:7s} round {s.get('round', 0)}]"
      f" {rec['status']}"
  )
  res = rec.get("result", {})
  if "median_s" in res:
    head += (
        f" {res['median_s']:.3f} s/step (min {res['min_s']:.3f}),"
        f" peak RSS {res['peak_rss_mb']:.0f} MB"
    )
  elif "ms_per_token" in res:
    head += f" {res['ms_per_token']:.1f} ms/token"
  return (
      head + f", load {rec['load_before'][0]:.1f}->{rec['load_after'][0]:.1f}"
  )


def main(argv=None):
  args = parse_args(argv)
  if args.report:
    paths = args.report.split(",")
    parts = []
    for path in paths:
      with open(path) as f:
        parts.append(json.load(f))
    res = parts[0]
    for other in parts[1:]:  # runs of one comparison made in several calls
      res["runs"] += other["runs"]
      res["meta"].setdefault("more_commands", []).append(
          other["meta"]["command"]
      )
    out = os.path.splitext(paths[0])[0] if len(paths) == 1 else args.out
    write_report(res, out)
    return
  port_py = peer_python(args)
  pythons = {side: port_py for side in PORT_ENV}
  pythons["ours"] = args.ours_python
  model = {
      "layers": args.layers,
      "d_model": args.d_model,
      "heads": args.heads,
      "d_ff": args.d_ff,
      "position": args.position,
  }
  res = {
      "meta": {
          "date": datetime.datetime.now().isoformat(timespec="seconds"),
          "command": " ".join(
              [os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]
          ),
          "label": args.label,
          "machine": machine_info(port_py),
          "sides": args.sides,
          "port_env": PORT_ENV,
          "env": {
              k: v
              for k, v in os.environ.items()
              if k.startswith(("OMP_", "MKL_", "XLA_", "GOMP_"))
          },
          "uptime_at_start": uptime(),
          "args": {
              k: v
              for k, v in vars(args).items()
              if k not in ("peer_python", "ours_python", "peer_venv", "out")
          },
          "model": dict(
              model,
              vocab=256,
              window=128,
              num_clusters="n / 128",
              batch_train=1,
              optimizer="Adam lr 1e-4",
          ),
          "port_requirements": list(PEER_REQUIREMENTS),
      },
      "leak": {},
      "runs": [],
  }
  prefix = args.out
  os.makedirs(os.path.dirname(prefix) or ".", exist_ok=True)

  def save():
    with open(prefix + ".json", "w") as f:
      json.dump(res, f, indent=1)

  print(res["meta"]["uptime_at_start"], flush=True)
  if args.quality:
    res["mode"] = "quality"
    peer_quality.run_all(args, pythons, run_child, res, save)
  else:
    measure_speed(args, pythons, model, res, save)
  res["meta"]["uptime_at_end"] = uptime()
  save()
  write_report(res, prefix)


def measure_speed(args, pythons, model, res, save):
  """The leak check, train-step and generation points (not --quality)."""
  if not args.no_leak:
    # A small model is enough: the question is yes or no.
    small = {
        "layers": 2,
        "d_model": 128,
        "heads": 4,
        "d_ff": 4 * 128,
        "position": args.position,
    }
    for side in ("port", "ours"):
      rec = run_child(
          pythons[side],
          dict(small, side=side, kind="leak", n=512, cuts=[64, 256, 448]),
          args.timeout,
      )
      res["leak"][side] = rec
      print(
          f"[leak {side}] {rec['status']} "
          f"{json.dumps(rec.get('result', rec.get('stderr_tail')))}",
          flush=True,
      )
  points = [
      (
          "train",
          {"n": n, "batch": 1, "steps": args.steps or (3 if n <= 2048 else 2)},
      )
      for n in args.sizes
  ]
  if not args.no_gen:
    points += [
        ("gen", {"context": args.gen_context, "batch": b, "tokens": None})
        for b in args.gen_batches
    ]
  flip = 0
  for r in range(args.rounds):
    for kind, point in points:
      # Alternate which library goes first, so neither always follows a
      # warm cache or a load spike caused by the other.
      k = flip % len(args.sides)
      order = args.sides[k:] + args.sides[:k]
      flip += 1
      for side in order:
        spec = dict(model, side=side, kind=kind, round=r, **point)
        if kind == "gen":
          spec["tokens"] = (
              args.gen_tokens_ours if side == "ours" else args.gen_tokens_port
          )
        rec = run_child(pythons[side], spec, args.timeout)
        res["runs"].append(rec)
        print(describe(rec), flush=True)
        if rec["status"] != "ok":
          print(rec.get("stderr_tail", "")[-600:], flush=True)
        save()


def write_report(res, prefix):
  report = peer_quality if res.get("mode") == "quality" else peer_report
  res["summary"] = report.summarise(res)
  with open(prefix + ".json", "w") as f:
    json.dump(res, f, indent=1)
  md = report.markdown(res)
  with open(prefix + ".md", "w") as f:
    f.write(md)
  report.plot(res, prefix + ".png")
  print(md)
  print(f"wrote {prefix}.json, .md, .png")


if __name__ == "__main__":
  main()
