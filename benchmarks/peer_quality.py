# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Time to quality, routing-jax vs the PyTorch port: `peer_pytorch.py
--quality`.

Both libraries train the same model (peer_workers: bytes, pre-norm, RoPE,
GEGLU 4·d_model with biases, `--local-heads` local heads and the rest
causal routing heads with windows of 128 and n / 128 clusters) on the same
batches of the embedded corpus' train plays for the same wall time, each
run a child process (peer_quality_workers.py), the runs one after another.
Validation bits/byte is taken on the validation plays against training
time; the port's final model is also scored causally, so what its routing
reads from the future is shown next to its teacher-forced number.

Writes <out>.json (machine, every run, its curve), <out>.md (table) and
<out>.png (validation bits/byte against training seconds).
"""

import os
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORKER = os.path.join(HERE, "peer_quality_workers.py")

# The port's example training script (examples/enwik8_simple/train.py):
# Adam at 1e-4, gradients clipped to norm 0.5.
PORT_RECIPE = {"name": "adam_const", "lr": 1e-4, "grad_clip": 0.5}
RECIPE_NAMES = ("adam_const", "adamw_cos")


def our_recipe():
  """experiments/shakespeare.py's optimizer, from the config itself."""
  sys.path.insert(0, ROOT)
  from experiments import shakespeare  # pylint: disable=g-import-not-at-top

  t = shakespeare.get_config().train
  return {
      "name": "adamw_cos",
      "lr": float(t.lr),
      "warmup_steps": int(t.warmup_steps),
      "weight_decay": float(t.weight_decay),
      "grad_clip": float(t.grad_clip),
      "b1": float(t.b1),
      "b2": float(t.b2),
      "kmeans_weight": float(t.kmeans_loss_weight),
  }


def recipe(name, lr=0.0):
  r = dict(PORT_RECIPE if name == "adam_const" else our_recipe())
  if lr:
    r["lr"] = lr
  return r


def _value(text):
  low = text.lower()
  if low in ("true", "false"):
    return low == "true"
  for kind in (int, float):
    try:
      return kind(text)
    except ValueError:
      pass
  return text


def parse_runs(text):
  """ "port:adam_const,ours+exclude_self=true:adamw_cos@1e-3" -> runs.

  Returns [(side, recipe, lr, overrides)]: the overrides (`+FIELD=VALUE`
  after ours) replace ModelConfig fields of our model, or else RoutingConfig
  ones (peer_workers.ours_config).
  """
  runs = []
  for item in filter(None, text.split(",")):
    head, _, rest = item.partition(":")
    name, _, lr = rest.partition("@")
    side, *opts = head.split("+")
    if side not in ("port", "ours") or name not in RECIPE_NAMES:
      raise ValueError(
          f"--runs item {item!r}: want SIDE[+FIELD=VALUE...]:RECIPE[@LR] with"
          f" SIDE port or ours and RECIPE in {RECIPE_NAMES}"
      )
    overrides = {}
    for opt in opts:
      field, eq, value = opt.partition("=")
      if side != "ours" or not eq or not field:
        raise ValueError(
            f"--runs item {item!r}: +FIELD=VALUE (ModelConfig or"
            " RoutingConfig fields) only after ours"
        )
      overrides[field] = _value(value)
    runs.append((side, name, float(lr) if lr else 0.0, overrides))
  return runs


def write_data(path, n, causal_windows, causal_positions, seed=1234):
  """The embedded corpus as the children read it (npz).

  train: the train plays concatenated (random windows are drawn from it);
  valid: every whole window of n + 1 bytes, stride n, inside each
  validation play; causal_*: the subset scored causally.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top

  sys.path.insert(0, ROOT)
  from routing_jax.data import corpus  # pylint: disable=g-import-not-at-top

  train = np.frombuffer(corpus.load_split("train"), np.uint8)
  valid = []
  for doc in corpus.documents("validation"):
    for s in range(0, len(doc) - n - 1, n):
      valid.append(doc[s : s + n + 1])
  valid = np.stack(valid)
  rng = np.random.default_rng(seed)
  pick = np.sort(rng.choice(len(valid), causal_windows, replace=False))
  positions = np.sort(rng.choice(n, causal_positions, replace=False))
  np.savez(
      path,
      train=train,
      valid=valid,
      causal_windows=pick,
      causal_positions=positions,
  )
  return {
      "train_bytes": int(len(train)),
      "valid_windows": int(len(valid)),
      "causal_windows": pick.tolist(),
      "causal_positions": positions.tolist(),
  }


def run_all(args, pythons, run_child, res, save):
  """Trains every (seed, run) pair, alternating which side goes first."""
  model = {
      "layers": args.layers,
      "d_model": args.d_model,
      "heads": args.heads,
      "local_heads": args.local_heads,
      "d_ff": args.d_ff,
      "position": args.position,
  }
  runs = parse_runs(args.runs)
  kmeans_weight = our_recipe()["kmeans_weight"]  # our side's loss weight
  with tempfile.TemporaryDirectory() as tmp:
    data = os.path.join(tmp, "data.npz")
    res["data"] = write_data(
        data, args.quality_n, args.causal_windows, args.causal_positions
    )
    res["meta"]["model"] = dict(
        model,
        vocab=256,
        window=128,
        num_clusters=args.quality_n // 128,
        n=args.quality_n,
        batch=args.batch,
    )
    for i, seed in enumerate(args.seeds):
      order = runs if i % 2 == 0 else runs[::-1]
      for side, name, lr, overrides in order:
        r = recipe(name, lr)
        spec = dict(
            model,
            side=side,
            kind="quality",
            seed=seed,
            n=args.quality_n,
            batch=args.batch,
            recipe=r,
            kmeans_weight=kmeans_weight,
            budget_s=args.budget,
            evals=args.evals,
            curve_windows=args.curve_windows,
            data=data,
            routing_overrides=overrides,
        )
        rec = run_child(pythons[side], spec, args.budget * 3 + 900, WORKER)
        res["runs"].append(rec)
        print(describe(rec), flush=True)
        if rec["status"] != "ok":
          print(rec.get("stderr_tail", "")[-1500:], flush=True)
        save()


def label(spec):
  r = spec["recipe"]
  opts = "".join(
      f" {k}={v}" for k, v in spec.get("routing_overrides", {}).items()
  )
  return f"{spec['side']}{opts} {r['name']} lr {r['lr']:g}"


def describe(rec):
  s = rec["spec"]
  head = f"[quality {label(s)} seed {s['seed']}] {rec['status']}"
  q = rec.get("result")
  if q:
    head += (
        f": {q['steps']} steps in {q['train_s']:.0f} s"
        f" ({q['steady_step_s']:.3f} s/step), valid"
        f" {q['final_bits_per_byte']:.3f} bits/byte, subset teacher-forced"
        f" {q['subset_teacher_forced_bits']:.3f} causal"
        f" {q['subset_causal_bits']:.3f}"
    )
  return head


def summarise(res):
  """Per (side, recipe, lr): mean and per-seed numbers."""
  groups = {}
  for rec in res["runs"]:
    if rec["status"] == "ok":
      groups.setdefault(label(rec["spec"]), []).append(rec)
  out = {}
  for name, recs in groups.items():

    def col(key, recs=recs):
      return [r["result"][key] for r in recs]

    out[name] = {
        "seeds": [r["spec"]["seed"] for r in recs],
        "steps": col("steps"),
        "steady_step_s": col("steady_step_s"),
        "valid_bits": col("final_bits_per_byte"),
        "subset_teacher_forced": col("subset_teacher_forced_bits"),
        "subset_causal": col("subset_causal_bits"),
        "mean_valid_bits": statistics.mean(col("final_bits_per_byte")),
        "mean_subset_causal": statistics.mean(col("subset_causal_bits")),
        "mean_leak": statistics.mean(
            a - b
            for a, b in zip(
                col("subset_causal_bits"), col("subset_teacher_forced_bits")
            )
        ),
    }
  return out


def markdown(res):
  m = res["meta"]
  s = res["summary"]
  mod = m.get("model", {})
  lines = [
      "# Time to quality: routing-jax vs routing-transformer 1.6.1",
      "",
      f"CPU: {m['machine'].get('cpu')} ({m['machine'].get('cpu_count')}"
      f" cores); {m['date']}; commands: "
      + ", ".join(
          f"`{c}`" for c in [m["command"]] + m.get("more_commands", [])
      ),
      "",
      (
          f"Model: {mod.get('layers')} layers, d_model {mod.get('d_model')},"
          f" {mod.get('heads')} heads ({mod.get('local_heads')} local), window"
          f" 128, {mod.get('num_clusters')} clusters, batch {mod.get('batch')}"
          f" x {mod.get('n')} bytes; {m['args']['budget']:.0f} s of training"
          " per run (compilation included, evaluation excluded). Validation:"
          f" {res['data']['valid_windows']} windows of the validation plays;"
          f" causal subset: {len(res['data']['causal_windows'])} windows x"
          f" {len(res['data']['causal_positions'])} positions."
      ),
      "",
      (
          "| run | seeds | steps | s/step | valid bits/byte (teacher-forced) |"
          " subset, teacher-forced | subset, causal | leak |"
      ),
      "|---|---|---|---|---|---|---|---|",
  ]
  for name, g in sorted(s.items(), key=lambda kv: kv[1]["mean_subset_causal"]):
    lines.append(
        f"| {name} | {','.join(map(str, g['seeds']))} |"
        f" {statistics.mean(g['steps']):.0f} |"
        f" {statistics.mean(g['steady_step_s']):.3f} |"
        f" {g['mean_valid_bits']:.3f} ({_spread(g['valid_bits'])}) |"
        f" {statistics.mean(g['subset_teacher_forced']):.3f} |"
        f" {g['mean_subset_causal']:.3f} ({_spread(g['subset_causal'])}) |"
        f" {g['mean_leak']:+.3f} |"
    )
  lines += [
      "",
      (
          "leak: causal minus teacher-forced bits/byte on the subset (what the"
          " model reads from tokens after the one it predicts; 0 for a causal"
          " model). Ranked by the causal subset score. Spread: min-max over"
          " seeds."
      ),
  ]
  return "\n".join(lines) + "\n"


def _spread(xs):
  return f"{min(xs):.3f}-{max(xs):.3f}" if len(xs) > 1 else "1 seed"


def plot(res, path):
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("matplotlib missing: no plot")
    return
  fig, ax = plt.subplots(figsize=(7, 4.5))
  colors = {}
  for rec in res["runs"]:
    if rec["status"] != "ok":
      continue
    name = label(rec["spec"])
    c = colors.setdefault(name, f"C{len(colors)}")
    curve = rec["result"]["curve"]
    ax.plot(
        [p["train_s"] for p in curve],
        [p["bits_per_byte"] for p in curve],
        color=c,
        label=name
        if rec["spec"]["seed"] == res["meta"]["args"]["seeds"][0]
        else None,
        alpha=0.8,
    )
    q = rec["result"]
    leak = q["subset_causal_bits"] - q["subset_teacher_forced_bits"]
    if leak > 1e-3:  # the port's: its final score plus its measured leak
      ax.plot(
          [q["train_s"]],
          [curve[-1]["bits_per_byte"] + leak],
          marker="x",
          color=c,
          linestyle="none",
      )
  ax.set_xlabel("training seconds (evaluation excluded)")
  ax.set_ylabel("validation bits/byte (teacher-forced)")
  ax.set_title("Time to quality (x: plus the leak measured causally)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
