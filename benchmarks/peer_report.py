# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Summary, markdown table and plot of peer_pytorch.py's JSON (stdlib only;
matplotlib if present)."""

import statistics
import sys

NAMES = {
    "port": "port",
    "port_passive": "port, OMP_WAIT_POLICY=PASSIVE",
    "port_1thread": "port, 1 thread",
    "ours": "routing-jax",
}
LONG = {
    "port": "routing-transformer 1.6.1 (torch 2.13, default threads)",
    "port_passive": "routing-transformer 1.6.1, OMP_WAIT_POLICY=PASSIVE",
    "port_1thread": "routing-transformer 1.6.1, OMP_NUM_THREADS=1",
    "ours": "routing-jax",
}


def sides(res):
  return res["meta"].get("sides", ["port", "ours"])


def _ok(res, kind, side, key, value):
  return [
      r
      for r in res["runs"]
      if r["status"] == "ok"
      and r["spec"]["kind"] == kind
      and r["spec"]["side"] == side
      and r["spec"][key] == value
  ]


def _failures(res, kind, side, key, value):
  return [
      f"round {r['spec']['round']}: {r['status']}"
      for r in res["runs"]
      if r["status"] != "ok"
      and r["spec"]["kind"] == kind
      and r["spec"]["side"] == side
      and r["spec"][key] == value
  ]


def _per_round_ratio(res, kind, key, value, metric, num, den):
  """Median over rounds of num/den, each round's runs made back to back."""
  by = {
      side: {
          r["spec"]["round"]: r["result"][metric]
          for r in _ok(res, kind, side, key, value)
      }
      for side in (num, den)
  }
  both = sorted(set(by[num]) & set(by[den]))
  if not both:
    return None
  return statistics.median(by[num][r] / by[den][r] for r in both)


def summarise(res):
  """Per point and side: fastest round, spread, memory; ratios vs ours."""
  sides_ = sides(res)
  ports = [s for s in sides_ if s != "ours"]
  sizes = sorted(
      {r["spec"]["n"] for r in res["runs"] if r["spec"]["kind"] == "train"}
  )
  batches = sorted(
      {r["spec"]["batch"] for r in res["runs"] if r["spec"]["kind"] == "gen"}
  )
  out = {"train": [], "gen": [], "params": {}}
  for n in sizes:
    row = {"n": n, "num_clusters": n // 128}
    for side in sides_:
      runs = _ok(res, "train", side, "n", n)
      row[side] = {"failures": _failures(res, "train", side, "n", n)}
      if not runs:
        continue
      med = [r["result"]["median_s"] for r in runs]
      row[side].update(
          best_s=min(med),
          round_medians_s=med,
          spread=max(med) / min(med),
          peak_rss_mb=statistics.median(
              r["result"]["peak_rss_mb"] for r in runs
          ),
          above_baseline_mb=statistics.median(
              r["result"]["peak_rss_mb"] - r["result"]["baseline_rss_mb"]
              for r in runs
          ),
      )
      lib = "ours" if side == "ours" else "port"
      out["params"].setdefault(
          lib,
          {
              "total": runs[0]["result"]["params"],
              "ffn_per_layer": runs[0]["result"]["ffn_params_per_layer"],
              "versions": runs[0]["result"]["versions"],
          },
      )
    for port in ports:
      if "best_s" in row[port] and "best_s" in row["ours"]:
        row[f"ours_over_{port}"] = {
            "best": row["ours"]["best_s"] / row[port]["best_s"],
            "per_round": _per_round_ratio(
                res, "train", "n", n, "median_s", "ours", port
            ),
            "peak_rss": row["ours"]["peak_rss_mb"] / row[port]["peak_rss_mb"],
        }
    out["train"].append(row)
  for b in batches:
    row = {"batch": b}
    for side in sides_:
      runs = _ok(res, "gen", side, "batch", b)
      row[side] = {"failures": _failures(res, "gen", side, "batch", b)}
      if not runs:
        continue
      ms = [r["result"]["ms_per_token"] for r in runs]
      row["context"] = runs[0]["spec"]["context"]
      row[side].update(
          best_ms=min(ms),
          round_ms=ms,
          spread=max(ms) / min(ms),
          peak_rss_mb=max(r["result"]["peak_rss_mb"] for r in runs),
      )
      if side == "ours":
        row[side]["sample_best_ms"] = min(
            r["result"]["sample_ms_per_token"] for r in runs
        )
    for port in ports:
      if "best_ms" in row[port] and "best_ms" in row["ours"]:
        row[f"{port}_over_ours"] = {
            "best": row[port]["best_ms"] / row["ours"]["best_ms"],
            "per_round": _per_round_ratio(
                res, "gen", "batch", b, "ms_per_token", port, "ours"
            ),
        }
    out["gen"].append(row)
  loads = [r[k][0] for r in res["runs"] for k in ("load_before", "load_after")]
  if loads:
    out["load_1min_range"] = [min(loads), max(loads)]
  return out


def _f(x, fmt):
  return "—" if x is None else format(x, fmt)


def _cell(d, key, fmt):
  if key in d:
    return _f(d[key], fmt)
  return "; ".join(d.get("failures", [])) or "—"


def _rounds(res):
  asked = res["meta"]["args"]["rounds"]
  done = {r["spec"]["round"] for r in res["runs"]}
  last = max(done, default=-1)
  per_point = len(sides(res)) * len({
      (r["spec"]["kind"], r["spec"].get("n", r["spec"].get("batch")))
      for r in res["runs"]
  })
  complete = sum(
      1
      for k in done
      if sum(r["spec"]["round"] == k for r in res["runs"]) == per_point
  )
  if complete == asked:
    return f"{asked} round(s)"
  return (
      f"{asked} rounds asked, {complete} complete (the run was stopped "
      f"in round {last + 1}; its finished points are included)"
  )


def markdown(res):
  s, meta = res["summary"], res["meta"]
  sides_ = sides(res)
  ports = [x for x in sides_ if x != "ours"]
  m = meta["machine"]
  load = s.get("load_1min_range") or [None, None]
  lines = [
      "# routing-jax vs the PyTorch port (routing-transformer)",
      "",
      (
          f"`{meta['command']}` on {meta['date']}. {m.get('cpu', '')},"
          f" {m['cpu_count']} cores, shared with other jobs. Load average (1"
          f" min) around the points: {_f(load[0], '.1f')}–{_f(load[1], '.1f')};"
          f" `uptime` at start: `{meta['uptime_at_start']}`, at end:"
          f" `{meta.get('uptime_at_end', '')}`. {meta['label']}"
      ),
      "",
      (
          "Model (both sides): vocab 256, 6 layers, d_model 512, 8 heads of"
          " 64, all heads causal routing, w = 128, k = n/128, pre-norm, rotary"
          " positions, GEGLU FFN of width 2048 with biases, no dropout, batch"
          " 1, Adam; routing-jax with the XLA flags its CLI sets. One child"
          f" process per point; {_rounds(res)}, the runs interleaved point by"
          " point; each point keeps its fastest round (a round's value: the"
          " median of its timed steps), spread = slowest / fastest round."
          " Ratios: `best` divides the fastest rounds, `per round` is the"
          " median over rounds of the ratio between runs made back to back."
      ),
      "",
      "Sides: " + "; ".join(f"**{NAMES[x]}** = {LONG[x]}" for x in sides_),
      "",
  ]
  p = s["params"]
  if p:
    libs = [k for k in ("port", "ours") if k in p]
    lines += [
        "| parameters | " + " | ".join(LONG[k] for k in libs) + " |",
        "|---|" + "---:|" * len(libs),
        "| total | " + " | ".join(f"{p[k]['total']:,}" for k in libs) + " |",
        "| FFN per layer | "
        + " | ".join(f"{p[k]['ffn_per_layer']:,}" for k in libs)
        + " |",
        "",
        "Versions: "
        + "; ".join(
            f"{k}: "
            + ", ".join(
                f"{a} {b}"
                for a, b in p[k]["versions"].items()
                if isinstance(b, (str, int))
            )
            for k in libs
        ),
        "",
    ]
  lines += [
      "## Training step: seconds (forward, backward, k-means update, Adam)",
      "",
      "| n | k | "
      + " | ".join(f"{NAMES[x]} s/step (spread)" for x in sides_)
      + " | "
      + " | ".join(f"jax / {NAMES[x]}: best (per round)" for x in ports)
      + " |",
      "|---:|---:|" + "---:|" * (len(sides_) + len(ports)),
  ]
  for row in s["train"]:
    cells = [
        f"{_cell(row[x], 'best_s', '.3f')} ({_f(row[x].get('spread'), '.2f')})"
        for x in sides_
    ]
    cells += [
        f"{_f(row.get(f'ours_over_{x}', {}).get('best'), '.2f')} "
        f"({_f(row.get(f'ours_over_{x}', {}).get('per_round'), '.2f')}"
        ")"
        for x in ports
    ]
    lines.append(
        f"| {row['n']} | {row['num_clusters']} | " + " | ".join(cells) + " |"
    )
  lines += [
      "",
      (
          "## Training step: peak RSS of the child, MB (above the "
          "baseline after imports, model and optimizer init)"
      ),
      "",
      "| n | "
      + " | ".join(NAMES[x] for x in sides_)
      + " | "
      + " | ".join(f"jax / {NAMES[x]}" for x in ports)
      + " |",
      "|---:|" + "---:|" * (len(sides_) + len(ports)),
  ]
  for row in s["train"]:
    cells = [
        f"{_cell(row[x], 'peak_rss_mb', '.0f')} "
        f"({_f(row[x].get('above_baseline_mb'), '.0f')})"
        for x in sides_
    ]
    cells += [
        _f(row.get(f"ours_over_{x}", {}).get("peak_rss"), ".2f") for x in ports
    ]
    lines.append(f"| {row['n']} | " + " | ".join(cells) + " |")
  lines.append("")
  if s["gen"]:
    lines += [
        "## Generation: ms per token",
        "",
        (
            "The port re-runs the full forward over the context per token"
            " (`AutoregressiveWrapper.generate`); routing-jax: one jitted,"
            " cached `generation.decode_step` call per token (and the slope of"
            " `generation.sample`, whose loop runs on the device)."
        ),
        "",
        "| batch | context | "
        + " | ".join(f"{NAMES[x]} (spread)" for x in ports)
        + " | jax cached step (spread) | jax `sample` slope | "
        + " | ".join(f"{NAMES[x]} / jax step: best (per round)" for x in ports)
        + " |",
        "|---:|---:|" + "---:|" * (2 * len(ports) + 2),
    ]
    for row in s["gen"]:
      cells = [
          f"{_cell(row[x], 'best_ms', '.1f')} "
          f"({_f(row[x].get('spread'), '.2f')})"
          for x in ports
      ]
      cells += [
          (
              f"{_cell(row['ours'], 'best_ms', '.2f')} "
              f"({_f(row['ours'].get('spread'), '.2f')})"
          ),
          _f(row["ours"].get("sample_best_ms"), ".2f"),
      ]
      cells += [
          f"{_f(row.get(f'{x}_over_ours', {}).get('best'), '.0f')}x "
          f"({_f(row.get(f'{x}_over_ours', {}).get('per_round'), '.0f')}"
          "x)"
          for x in ports
      ]
      lines.append(
          f"| {row['batch']} | {row.get('context', '')} | "
          + " | ".join(cells)
          + " |"
      )
    lines.append("")
  if res["leak"]:
    lines += [
        "## Causality check (small model, eval mode)",
        "",
        (
            "Max change of the logits at positions < c when only the "
            "tokens from c on are replaced (2 layers, d 128, n 512, w 128,"
            " k 4, k-means initialised from data):"
        ),
        "",
    ]
    for side, rec in res["leak"].items():
      if rec["status"] != "ok":
        lines.append(f"* {LONG[side]}: {rec['status']}")
        continue
      pts = ", ".join(
          f"c={q['cut']}: {q['max_abs_logit_change_before_cut']:.3g} "
          f"({q['positions_changed']}/{q['positions']} positions changed)"
          for q in rec["result"]["points"]
      )
      extra = rec["result"].get("fraction_tokens_in_no_cluster")
      lines.append(
          f"* {LONG[side]}: {pts}"
          + (
              f". {100 * extra:.0f}% of the tokens are in no cluster's top-w "
              "(they get no routed output)"
              if extra is not None
              else ""
          )
      )
    lines.append("")
  return "\n".join(lines)


def plot(res, path):
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("matplotlib missing: no plot", file=sys.stderr)
    return
  s = res["summary"]
  fig, axes = plt.subplots(1, 3, figsize=(14, 4.3))
  sides_ = sides(res)
  styles = {
      "port": "o-",
      "port_passive": "^--",
      "port_1thread": "v:",
      "ours": "s-",
  }
  for ax, key, label in (
      (axes[0], "best_s", "seconds per training step"),
      (axes[1], "peak_rss_mb", "peak RSS (MB)"),
  ):
    for side in sides_:
      pts = [(r["n"], r[side][key]) for r in s["train"] if key in r[side]]
      if pts:
        ax.plot(*zip(*pts), styles[side], label=LONG[side])
    ns = [r["n"] for r in s["train"]]
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    if ns:
      ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("sequence length n")
    ax.set_ylabel(label)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")  # both curves rise to the right
  axes[0].set_title("training step, best of rounds", fontsize=9)
  axes[1].set_title("peak RSS of the child process", fontsize=9)
  ax = axes[2]
  if s["gen"]:
    xs = range(len(s["gen"]))
    width = 0.8 / len(sides_)
    for i, side in enumerate(sides_):
      vals = [r[side].get("best_ms", 0) for r in s["gen"]]
      label = LONG[side] + (
          ", cached step" if side == "ours" else ", full forward"
      )
      ax.bar([x + width * i for x in xs], vals, width, label=label)
    ax.set_xticks(
        [x + 0.4 - width / 2 for x in xs],
        [f"batch {r['batch']}" for r in s["gen"]],
    )
    ax.set_yscale("log")
    top = max(r[x].get("best_ms", 1) for r in s["gen"] for x in sides_)
    ax.set_ylim(top=top * 30)  # room for the legend above the bars
    ax.set_ylabel("ms per generated token")
    ax.set_title(
        f"generation at context {s['gen'][0].get('context', '')}", fontsize=9
    )
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(True, axis="y", which="both", alpha=0.3)
  load = s.get("load_1min_range")
  cpu = res["meta"]["machine"].get("cpu", "CPU")
  fig.suptitle(
      f"routing-jax vs the PyTorch port, {cpu}"
      + (f", load {load[0]:.1f}–{load[1]:.1f}" if load else ""),
      fontsize=10,
  )
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
