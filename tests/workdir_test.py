# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""A workdir on (fake) object storage: every artifact lands in the bucket.

`fakegs://` (tests/helpers/fake_bucket.py) stands in for gs://: its paths
print as URLs, so anything that bypasses etils.epath (plain `open`,
`os.makedirs`, `os.path.abspath` of the URL) writes under the current
directory or fails, instead of reaching the bucket's backing directory.
"""

import json
import os
import pathlib
import sys

import pytest

from experiments import shakespeare
from routing_jax.training import report as report_lib
from routing_jax.training import train_loop
from routing_jax.training import workdir as workdir_lib

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "helpers"))
import fake_bucket  # pylint: disable=g-import-not-at-top,wrong-import-position
import metrics_test  # pylint: disable=g-import-not-at-top,wrong-import-position

# As in train_resume_test (the train step compiles once for all tests).
OVERRIDES = {
    "schedule": "rsqrt",
    "warmup_steps": 2,
    "checkpoint_every": 2,
    "eval_every": 1000,
    "log_every": 1,
}


def _config(steps):
  c = shakespeare.get_config("tiny")
  c.train.update(OVERRIDES, steps=steps)
  return c


def test_resolve_keeps_urls_and_makes_local_paths_absolute(
    tmp_path, monkeypatch
):
  monkeypatch.chdir(tmp_path)
  assert str(workdir_lib.resolve("gs://bucket/run")) == "gs://bucket/run"
  assert str(workdir_lib.resolve("run")) == str(tmp_path / "run")


@pytest.mark.slow
def test_train_resume_and_report_in_a_bucket(tmp_path, monkeypatch):
  root = tmp_path / "bucket"
  fake_bucket.install(root)
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  url = "fakegs://bucket/run"

  first = train_loop.train_and_evaluate(_config(2), url, profile_steps=1)
  assert first.start_step == 0
  result = train_loop.train_and_evaluate(_config(4), url)  # Resumes.
  assert result.start_step == 2
  report = report_lib.final_report(_config(4), url, result, sample=False)
  assert f"loss curve: {url}/loss_curve.png" in report

  assert not list(cwd.rglob("*"))  # Nothing went around epath.
  run = root / "bucket" / "run"
  assert json.loads((run / "config.json").read_text())["train"]["steps"] == 4
  steps = sorted(
      int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit()
  )
  assert steps == [2, 4]
  rows = [
      json.loads(line)
      for line in (run / "metrics.jsonl").read_text().splitlines()
  ]
  assert [r["step"] for r in rows] == [1, 2, 2, 3, 4, 4]
  events = [
      metrics_test.read_event_records(p.read_bytes())
      for p in sorted((run / "tensorboard").iterdir())
  ]
  assert len(events) == 2  # One event file per run.
  logged = sorted(
      s
      for e in events
      for s in metrics_test._scalars(e)
      if s[1] == "train/loss_nats"
  )
  assert logged == [
      (
          r["step"],
          "train/loss_nats",
          pytest.approx(r["train/loss_nats"], rel=1e-6),
      )
      for r in rows
      if "train/loss_nats" in r
  ]
  assert (run / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
  traces = list((run / "profile").rglob("*.xplane.pb"))
  assert traces and traces[0].stat().st_size > 0
