# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The time-to-quality mode of benchmarks/peer_pytorch.py (our side only:
the port needs torch, which the test environment does not install)."""

import math
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import peer_pytorch  # pylint: disable=g-import-not-at-top,wrong-import-position
import peer_quality  # pylint: disable=g-import-not-at-top,wrong-import-position
import peer_quality_workers as workers  # pylint: disable=g-import-not-at-top,wrong-import-position
from routing_jax.data import corpus  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_recipes_learning_rates():
  port = peer_quality.recipe("adam_const")
  assert port == {"name": "adam_const", "lr": 1e-4, "grad_clip": 0.5}
  assert workers.learning_rate(port, 0, 0.0) == 1e-4
  assert workers.learning_rate(port, 500, 0.99) == 1e-4
  ours = peer_quality.recipe("adamw_cos")
  # The main job's optimizer, read from its config.
  assert (ours["lr"], ours["warmup_steps"], ours["weight_decay"]) == (
      3e-3,
      60,
      0.1,
  )
  assert workers.learning_rate(ours, 0, 0.0) == 0.0
  assert workers.learning_rate(ours, 30, 0.01) == pytest.approx(1.5e-3)
  # After the warm-up the cosine follows the budget spent, not the steps.
  assert workers.learning_rate(ours, 60, 0.0) == pytest.approx(3e-3)
  assert workers.learning_rate(ours, 100, 0.5) == pytest.approx(1.5e-3)
  assert workers.learning_rate(ours, 100, 1.2) == pytest.approx(0.0)
  assert peer_quality.recipe("adamw_cos", 1e-3)["lr"] == 1e-3


def test_runs_are_parsed_and_bad_ones_refused():
  assert peer_quality.parse_runs("port:adam_const,ours:adamw_cos@1e-3") == [
      ("port", "adam_const", 0.0, {}),
      ("ours", "adamw_cos", 1e-3, {}),
  ]
  assert peer_quality.parse_runs(
      "ours+exclude_self=true+logit_scale=0.125+mode=topk:adam_const"
  ) == [(
      "ours",
      "adam_const",
      0.0,
      {"exclude_self": True, "logit_scale": 0.125, "mode": "topk"},
  )]
  with pytest.raises(ValueError, match="SIDE"):
    peer_quality.parse_runs("ours:sgd")
  with pytest.raises(ValueError, match="SIDE"):
    peer_quality.parse_runs("torch:adam_const")
  with pytest.raises(ValueError, match="only after ours"):
    peer_quality.parse_runs("port+exclude_self=true:adam_const")
  with pytest.raises(SystemExit):
    peer_pytorch.parse_args(["--quality", "--runs", "ours:sgd"])
  args = peer_pytorch.parse_args(["--quality"])
  assert (args.layers, args.d_model, args.heads, args.local_heads) == (
      4,
      256,
      4,
      2,
  )
  assert args.out.endswith("peer_quality")
  assert peer_pytorch.parse_args([]).layers == 6  # the speed mode's model


def test_validation_windows_come_from_the_held_out_plays(tmp_path):
  n = 1024
  path = str(tmp_path / "data.npz")
  info = peer_quality.write_data(path, n, 4, 8)
  data = np.load(path)
  train = data["train"].tobytes()
  assert train == corpus.load_split("train")
  docs = [d.tobytes() for d in corpus.documents("validation")]
  want = sum(len(range(0, len(d) - n - 1, n)) for d in docs)
  assert data["valid"].shape == (want, n + 1) == (info["valid_windows"], n + 1)
  # Every window is a slice of one validation play, never of the train plays.
  for w in data["valid"][:: max(1, want // 8)]:
    w = w.tobytes()
    assert any(w in d for d in docs)
    assert w[:256] not in train
  assert len(set(data["causal_windows"].tolist())) == 4
  assert data["causal_positions"].max() < n


def test_both_sides_draw_the_same_batches():
  train = np.arange(5000, dtype=np.int64) % 251
  a = workers.batches({"train": train}, 3, 4, 128)
  b = workers.batches({"train": train}, 3, 4, 128)
  c = workers.batches({"train": train}, 4, 4, 128)
  for _ in range(3):
    x, y, z = next(a), next(b), next(c)
    np.testing.assert_array_equal(x, y)
    assert not np.array_equal(x, z)
    assert x.shape == (4, 129)
    # Contiguous windows of the train bytes.
    np.testing.assert_array_equal(np.diff(x, axis=1) % 251, 1)


# One layer with one local and one routing head: both kinds of attention.
TINY_MODEL = {
    "layers": 1,
    "d_model": 32,
    "heads": 2,
    "local_heads": 1,
    "d_ff": 64,
    "position": "rope",
}


def _tiny_spec(tmp_path, budget):
  path = str(tmp_path / "tiny.npz")
  rng = np.random.default_rng(0)
  valid = rng.integers(0, 256, (6, 257)).astype(np.uint8)
  np.savez(
      path,
      train=np.frombuffer(b"to be or not to be " * 400, np.uint8),
      valid=valid,
      causal_windows=np.array([1, 4]),
      causal_positions=np.array([0, 100, 255]),
  )
  return {
      "side": "ours",
      **TINY_MODEL,
      "n": 256,
      "batch": 2,
      "seed": 0,
      "recipe": peer_quality.recipe("adamw_cos"),
      "kmeans_weight": 1.0,
      "budget_s": budget,
      "evals": 2,
      "curve_windows": 3,
      "data": path,
  }


def test_our_side_trains_for_its_budget_and_is_scored_causally(tmp_path):
  spec = _tiny_spec(tmp_path, budget=1e-3)
  side = workers.Ours()
  out = workers.run(spec, side)
  # The first step (with its compilation) uses the whole budget.
  assert out["steps"] == 1 and out["train_s"] >= 1e-3
  assert [p["step"] for p in out["curve"]] == [1]
  assert out["params"] > 0 and out["valid_windows"] == 6
  assert math.isfinite(out["final_bits_per_byte"])
  assert out["subset"] == [2, 3]
  # Exactly causal: changing the bytes after position p changes no
  # prediction of a byte at or before p.
  window = np.load(spec["data"])["valid"][:1]
  p = 100
  other = window.copy()
  other[:, p + 1 :] = (other[:, p + 1 :].astype(np.int32) + 7) % 256
  a, b = side.logp_targets(window), side.logp_targets(other)
  np.testing.assert_allclose(a[:, :p], b[:, :p], atol=1e-5)
  assert not np.allclose(a[:, p:], b[:, p:])
  # So its causal score is its teacher-forced score on the same pairs.
  assert out["subset_causal_bits"] == out["subset_teacher_forced_bits"]


def test_report_ranks_runs_by_their_causal_score(tmp_path):
  def rec(side, name, seed, causal, forced):
    return {
        "status": "ok",
        "spec": {
            "side": side,
            "seed": seed,
            "recipe": peer_quality.recipe(name),
        },
        "result": {
            "steps": 400,
            "train_s": 600.0,
            "steady_step_s": 1.5,
            "final_bits_per_byte": forced + 0.01,
            "subset_teacher_forced_bits": forced,
            "subset_causal_bits": causal,
            "curve": [
                {"train_s": 300.0, "bits_per_byte": 3.0},
                {"train_s": 600.0, "bits_per_byte": forced},
            ],
        },
    }

  res = {
      "meta": {
          "machine": {"cpu": "test CPU", "cpu_count": 2},
          "date": "today",
          "command": "peer_pytorch.py --quality",
          "model": {"layers": 4, "n": 1024},
          "args": {"budget": 600.0, "seeds": [0, 1]},
      },
      "data": {
          "valid_windows": 222,
          "causal_windows": [1],
          "causal_positions": [2],
      },
      "runs": [
          rec("port", "adam_const", 0, 2.4, 2.2),
          rec("port", "adam_const", 1, 2.6, 2.4),
          rec("ours", "adamw_cos", 0, 2.3, 2.3),
          {"status": "timeout", "spec": {"side": "ours", "seed": 1}},
      ],
  }
  res["summary"] = peer_quality.summarise(res)
  port = res["summary"]["port adam_const lr 0.0001"]
  assert port["mean_subset_causal"] == pytest.approx(2.5)
  assert port["mean_leak"] == pytest.approx(0.2)
  assert res["summary"]["ours adamw_cos lr 0.003"]["seeds"] == [0]
  md = peer_quality.markdown(res)
  rows = [
      l
      for l in md.splitlines()
      if l.startswith("| ours") or l.startswith("| port")
  ]
  assert rows[0].startswith("| ours") and "+0.200" in rows[1]
  peer_quality.plot(res, str(tmp_path / "q.png"))
  assert os.path.getsize(tmp_path / "q.png") > 1000


def test_run_overrides_reach_the_model_and_routing_configs():
  import peer_workers  # pylint: disable=g-import-not-at-top

  spec = {
      **TINY_MODEL,
      "routing_overrides": {"init_scale": 0.8, "logit_scale": 0.125},
  }
  cfg = peer_workers.ours_config(spec, 256)
  assert cfg.init_scale == 0.8 and cfg.routing.logit_scale == 0.125
  assert (cfg.num_routing_heads, cfg.routing.num_clusters) == (1, 2)
  with pytest.raises(TypeError):
    peer_workers.ours_config(dict(spec, routing_overrides={"nope": 1}), 256)
