# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Where one training step's time goes, from a jax.profiler trace.

Builds the peer benchmark's model (peer_workers.ours_config: 6 layers,
d_model 512, 8 causal routing heads, w = 128, k = n/128, GEGLU 2048 with
biases, RoPE, pre-norm), compiles the library's train step (loss, grads,
k-means update, Adam), times a few steps, then traces one under
jax.profiler. Every XLA thunk in the trace is matched to its HLO
instruction, whose metadata names the JAX operation and the Flax module
path (`layer_3/ffn/wi_gate/dot_general`), and its time is summed by part of
the model:

  ffn              the feed-forward layers and their LayerNorm
  projections      the attention's query/key/value/output matmuls
  routing core     sort, permutations, blocked attention, rotary positions
  k-means          centroid scores, assignments, statistics
  attention norms  the attention LayerNorm and q/k normalisation
  embed/loss       embedding, output layer, chunked loss
  optimizer        Adam and the gradient sums (outside the model)
  unnamed          fusions XLA made without a source operation (the
                   weight-gradient matmuls of dense_dot's custom VJP, and
                   layout copies)

and by kind (matmul, transposing copy, gather, elementwise...). Thunks may
run two at a time on 2 cores, so the sums can exceed the step time: the
JSON gives both, and the span covered by at least one thunk. With the
CLIs' flags (YNNPACK off) the large matmuls go to Eigen, which runs them
on its own thread pool after the thunk has returned: they show as short
launches, and the step time not covered by any thunk is mostly theirs
(`uncovered_ms`). The batched attention-block matmuls do show.

  python benchmarks/step_profile.py --n 8192 --out /tmp/prof8k
  XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=dot \\
    python benchmarks/step_profile.py --n 8192 --raw-xla-flags

By default the run uses the XLA flags the CLIs set (routing_jax/xla_flags);
--raw-xla-flags leaves XLA_FLAGS as the environment has it. Writes
<out>.json (totals, parts, kinds, top thunks, every thunk's time summed by
kind and shape) and prints a table.

Which thunks use the second core: profile once on one core, then on all
of them against that run; thunks that take about as long on two cores as
on one ran single-threaded (XLA:CPU splits only some fusions into
parallel tasks, and runs batched matmuls one batch element after another):

  python benchmarks/step_profile.py --n 1024 --batch 8 --layers 4 \
      --d-model 256 --heads 4 --local-heads 2 --cores 1 --out /tmp/one
  python benchmarks/step_profile.py --n 1024 --batch 8 --layers 4 \
      --d-model 256 --heads 4 --local-heads 2 --against /tmp/one.json
"""

import argparse
import collections
import glob
import json
import os
import re
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import machine  # pylint: disable=g-import-not-at-top,wrong-import-position

PARTS = (
    ("ffn", r"/(ffn|ffn_norm)/"),
    ("k-means", r"kmeans"),
    ("routing core", r"_causal|_rotate|_attend|routing_core"),
    ("projections", r"/(query|key|value|out)/"),
    ("attention norms", r"/(routing|local|attn_norm)/"),
    ("embed/loss", r"log_softmax|/embed/|/logits/|final_norm|loss|Dense"),
)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--n", type=int, default=8192, help="sequence length")
  p.add_argument("--layers", type=int, default=6)
  p.add_argument("--d-model", type=int, default=512)
  p.add_argument("--heads", type=int, default=8)
  p.add_argument("--d-ff", type=int, default=0, help="0: 4·d_model")
  p.add_argument("--batch", type=int, default=1)
  p.add_argument(
      "--local-heads",
      type=int,
      default=0,
      help="local heads per layer (the rest route)",
  )
  p.add_argument("--steps", type=int, default=2, help="timed steps")
  p.add_argument("--top", type=int, default=25, help="thunks listed")
  p.add_argument(
      "--raw-xla-flags",
      action="store_true",
      help="do not add the CLIs' XLA:CPU defaults",
  )
  p.add_argument("--out", default="", help="JSON path prefix")
  p.add_argument(
      "--cores",
      type=int,
      default=0,
      help="pin the process to this many cores (0: all it may use)",
  )
  p.add_argument(
      "--against",
      default="",
      help="a JSON of this script (e.g. --cores 1): per-thunk time ratios",
  )
  return p.parse_args(argv)


def hlo_index(hlo_text):
  """Instruction name -> (shape, opcode, op_name metadata)."""
  out = {}
  pat = re.compile(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+) ([\w\-]+)\(")
  for line in hlo_text.splitlines():
    m = pat.match(line)
    if m:
      op = re.search(r'op_name="([^"]*)"', line)
      out[m.group(1)] = (m.group(2), m.group(3), op.group(1) if op else "")
  return out


def part_of(op_name):
  if not op_name:
    return "unnamed"
  if "TransformerLM" not in op_name:
    return "optimizer"
  for name, pat in PARTS:
    if re.search(pat, op_name):
      return name
  return "other model"


def thunk_base(thunk):
  """A thunk's name without XLA's numbering: `dot.336` -> `dot`."""
  return re.sub(r"[.\d]+$", "", thunk)


def kind_of(thunk, opcode):
  base = thunk_base(thunk)
  if base in ("dot", "ynn_fusion") or opcode == "dot":
    return "matmul"
  if base.startswith("copy") or base.endswith("transpose"):
    return "copy/transpose"
  if "gather" in base or "scatter" in base:
    return "gather/scatter"
  if "sort" in base:
    return "sort"
  if "reduce" in base:
    return "reduce"
  return "elementwise/other"


def thunk_events(trace_dir):
  import jax  # pylint: disable=g-import-not-at-top

  path = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
  data = jax.profiler.ProfileData.from_file(path[0])
  events = []
  for plane in data.planes:
    for line in plane.lines:
      if not line.name.startswith("tf_XLAEigen"):
        continue
      for ev in line.events:
        if ev.name.startswith("ThunkExecutor") or "Await" in ev.name:
          continue
        events.append((ev.name, ev.start_ns, ev.duration_ns))
  return events


def covered_ns(events):
  """Time covered by at least one event."""
  spans = sorted((s, s + d) for _, s, d in events)
  total, cur_s, cur_e = 0, *spans[0]
  for s, e in spans[1:]:
    if s > cur_e:
      total += cur_e - cur_s
      cur_s, cur_e = s, e
    else:
      cur_e = max(cur_e, e)
  return total + cur_e - cur_s


def single_threaded(this, other, threshold=1.3):
  """Thunk (kind, shape) times of `this` run against `other`'s.

  Returns (ms in thunks less than `threshold` times faster here than in
  `other`, ms in all matched thunks, rows [ms here, ms there, key] by time).
  """
  mine, theirs = this["thunks_by_shape"], other["thunks_by_shape"]
  rows = sorted(
      ((v, theirs[k], k) for k, v in mine.items() if k in theirs),
      reverse=True,
  )
  slow = sum(a for a, b, _ in rows if b < threshold * a)
  return slow, sum(a for a, _, _ in rows), rows


def main(argv=None):
  args = parse_args(argv)
  if args.cores:
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: args.cores]))
  if not args.raw_xla_flags:
    from routing_jax import xla_flags  # pylint: disable=g-import-not-at-top

    xla_flags.apply_cpu_defaults()
  import jax  # pylint: disable=g-import-not-at-top
  import peer_workers  # pylint: disable=g-import-not-at-top

  spec = {
      "layers": args.layers,
      "d_model": args.d_model,
      "heads": args.heads,
      "d_ff": args.d_ff or 4 * args.d_model,
      "position": "rope",
      "local_heads": args.local_heads,
  }
  n = args.n
  _, step, state, batch = peer_workers.ours_train_setup(spec, n, args.batch)
  compiled = step.lower(state, batch).compile()
  index = hlo_index(compiled.as_text())
  state, _ = jax.block_until_ready(compiled(state, batch))
  times = []
  for _ in range(args.steps):
    t0 = time.perf_counter()
    state, _ = jax.block_until_ready(compiled(state, batch))
    times.append(time.perf_counter() - t0)
  with tempfile.TemporaryDirectory() as trace_dir:
    t0 = time.perf_counter()
    with jax.profiler.trace(trace_dir):
      state, _ = jax.block_until_ready(compiled(state, batch))
    traced_s = time.perf_counter() - t0
    events = thunk_events(trace_dir)

  parts, kinds, matrix, by_shape = (collections.Counter() for _ in range(4))
  top = []
  for name, _, dur in events:
    shape, opcode, op_name = index.get(name, ("?", "?", ""))
    part, kind = part_of(op_name), kind_of(name, opcode)
    backward = "transpose(" in op_name
    parts[part] += dur
    kinds[kind] += dur
    matrix[(part, "bwd" if backward else "fwd", kind)] += dur
    by_shape[f"{thunk_base(name)} {shape.split('{')[0]}"] += dur
    top.append(
        (dur, name, shape, re.sub(r"^.*?TransformerLM\)*/", "", op_name))
    )
  total = sum(parts.values())
  ms = lambda v: round(v / 1e6, 1)
  result = {
      "n": n,
      "spec": spec,
      "machine": machine.describe(),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "cores": len(os.sched_getaffinity(0)),
      "step_s": times,
      "traced_step_s": traced_s,
      "thunk_sum_ms": ms(total),
      "covered_ms": ms(covered_ns(events)),
      "uncovered_ms": ms(traced_s * 1e9 - covered_ns(events)),
      "parts_ms": {k: ms(v) for k, v in parts.most_common()},
      "kinds_ms": {k: ms(v) for k, v in kinds.most_common()},
      "part_direction_kind_ms": {
          " | ".join(k): ms(v) for k, v in matrix.most_common()
      },
      "thunks_by_shape": {k: ms(v) for k, v in by_shape.most_common()},
      "top_thunks": [
          {"ms": ms(d), "thunk": t, "shape": s, "op": o}
          for d, t, s, o in sorted(top, reverse=True)[: args.top]
      ],
  }
  print(
      f"n={n} step {min(times):.3f} s (traced {traced_s:.3f} s); thunks sum"
      f" {result['thunk_sum_ms']} ms, cover {result['covered_ms']} ms;"
      " uncovered (mostly Eigen's asynchronous matmuls)"
      f" {result['uncovered_ms']} ms"
  )
  for k, v in parts.most_common():
    print(f"  {k:16s} {ms(v):9.1f} ms  {100 * v / total:5.1f}%")
  print("by kind:")
  for k, v in kinds.most_common():
    print(f"  {k:16s} {ms(v):9.1f} ms  {100 * v / total:5.1f}%")
  if args.against:
    with open(args.against) as f:
      other = json.load(f)
    slow, matched, rows = single_threaded(result, other)
    result["against"] = {
        "path": args.against,
        "cores": other.get("cores"),
        "step_s": min(other["step_s"]),
        "not_sped_up_ms": round(slow, 1),
        "matched_ms": round(matched, 1),
    }
    print(
        f"against {args.against} ({other.get('cores')} cores, step"
        f" {min(other['step_s']):.3f} s): {slow:.0f} of {matched:.0f} ms of"
        " thunks here are less than 1.3x faster than there"
    )
    for a, b, k in rows[: args.top]:
      print(
          f"  {a:7.1f} ms here {b:7.1f} ms there  x{b / max(a, 1e-3):.2f}  {k}"
      )
  if args.out:
    with open(args.out + ".json", "w") as f:
      json.dump(result, f, indent=1)
  return result


if __name__ == "__main__":
  main()
