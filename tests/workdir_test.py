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
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments import shakespeare
from routing_jax import errors
from routing_jax import multihost
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


def _owner(path):
  return json.loads((path / workdir_lib.LOCK_FILE).read_text())


def test_lock_refuses_a_second_run_and_is_released(tmp_path):
  with workdir_lib.lock(tmp_path / "run") as lock_file:
    owner = _owner(tmp_path / "run")
    assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
    with pytest.raises(errors.WorkdirError) as e:
      with workdir_lib.lock(tmp_path / "run"):
        pass
    assert str(e.value) == (
        f"{tmp_path / 'run'} is in use by pid {os.getpid()} on host"
        f" {socket.gethostname()} since {owner['started']}. Wait for that run"
        f" to end, or use another --workdir; if it is gone, delete {lock_file}."
    )
    assert _owner(tmp_path / "run") == owner  # The refused run changed nothing.
  assert not lock_file.exists()
  with workdir_lib.lock(tmp_path / "run"):  # Free again.
    pass


def test_stale_locks_are_replaced_only_when_the_owner_is_gone(tmp_path):
  run = tmp_path / "run"
  run.mkdir()
  gone = subprocess.Popen(["true"])
  gone.wait()
  mine = workdir_lib._identity()  # pylint: disable=protected-access
  cases = {
      # A crashed run of this host: its pid has ended.
      "crashed": (dict(mine, pid=gone.pid, start_ticks=None), True),
      # The pid was reused (e.g. a container restart): another start time.
      "pid_reused": (dict(mine, start_ticks=mine["start_ticks"] + 1), True),
      "rebooted": (dict(mine, boot_id="another-boot"), True),
      # Another host's process cannot be seen from here.
      "other_host": (dict(mine, host="elsewhere", pid=gone.pid), False),
      "alive": (mine, False),
  }
  for name, (owner, stale) in cases.items():
    (run / workdir_lib.LOCK_FILE).write_text(json.dumps(owner))
    if stale:
      with workdir_lib.lock(run):
        assert _owner(run)["token"] != owner["token"], name
    else:
      with pytest.raises(errors.WorkdirError, match="if it is gone, delete"):
        with workdir_lib.lock(run):
          pass
      assert _owner(run) == owner, name


def test_only_process_0_takes_the_lock(tmp_path, monkeypatch):
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  monkeypatch.setattr(multihost, "allgather", lambda x: np.array([x, x]))
  with workdir_lib.lock(tmp_path / "run"):
    assert not (tmp_path / "run" / workdir_lib.LOCK_FILE).exists()
  # Process 0 failed to lock: every process stops.
  monkeypatch.setattr(multihost, "allgather", lambda x: np.array([0, x]))
  with pytest.raises(errors.WorkdirError, match="process 0 could not lock"):
    with workdir_lib.lock(tmp_path / "run"):
      pass


def test_lock_object_in_a_bucket(tmp_path, monkeypatch):
  fake_bucket.install(tmp_path / "bucket")
  monkeypatch.setattr(workdir_lib, "_SETTLE_S", 0.0)
  url = "fakegs://b/run"
  with workdir_lib.lock(url):
    owner = json.loads((tmp_path / "bucket/b/run/run.lock").read_text())
    assert owner["pid"] == os.getpid() and owner["command"]
    # A bucket is shared between hosts: a lock there is never judged stale
    # from a pid on another host; the message says what to delete.
    with pytest.raises(
        errors.WorkdirError, match=f"if it is gone, delete {url}/run.lock"
    ):
      with workdir_lib.lock(url):
        pass
  assert not (tmp_path / "bucket/b/run/run.lock").exists()


def test_second_cli_run_fails_in_one_line_and_changes_nothing(tmp_path):
  run = workdir_lib.create(tmp_path / "run", _config(2))
  saved = (run / "config.json").read_text()
  with workdir_lib.lock(run):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "routing_jax.main",
            "--config=experiments/shakespeare.py:tiny",
            "--config.model.d_model=64",
            f"--workdir={run}",
        ],
        cwd=pathlib.Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert result.stderr.splitlines()[-1].startswith(
      f"Invalid workdir: {run} is in use by pid {os.getpid()}"
  )
  assert (run / "config.json").read_text() == saved
  assert sorted(p.name for p in run.iterdir()) == ["config.json"]


def test_model_config_must_match_the_runs(tmp_path):
  run = workdir_lib.create(tmp_path / "run", _config(2))
  workdir_lib.check_model_config(run, _config(2))
  other = _config(2)
  other.model.routing.mode = "topk"
  other.model.d_model = 64
  other.model.routing.implementation = "pallas"  # Same function: allowed.
  with pytest.raises(errors.ConfigError) as e:
    workdir_lib.check_model_config(
        run, other, ignore=("routing.implementation",)
    )
  assert str(e.value) == (
      f"the model config differs from the one in {run}/config.json:"
      " model.d_model=64 (trained with 32), model.routing.mode='topk' (trained"
      " with 'causal'); drop those overrides or give the run's own config."
  )
  # A workdir without config.json (an older run) is not checked.
  workdir_lib.check_model_config(tmp_path, other)


def test_a_config_json_from_before_model_routing_still_reads(tmp_path):
  """Runs saved with the flat routing names (model.window, model.routing=
  "causal", model.kmeans_decay, ...) load nested, compare field by field
  and keep their checkpoint hash."""
  from routing_jax.nn import model_config  # pylint: disable=g-import-not-at-top
  from routing_jax.training import resume  # pylint: disable=g-import-not-at-top

  config = _config(2)
  nested = config.to_dict()
  old = dict(nested)
  old["model"] = model_config.legacy_flat(nested["model"])
  for key in [k for k in old["model"] if "." in k]:  # fields added since
    del old["model"][key]
  assert old["model"]["routing"] == "causal" and "kmeans_decay" in old["model"]
  run = tmp_path / "run"
  run.mkdir()
  (run / "config.json").write_text(json.dumps(old))
  loaded = workdir_lib.load_config(run)
  assert loaded.model.routing.mode == "causal"
  assert loaded.model.routing.kmeans.decay == config.model.routing.kmeans.decay
  assert resume.config_hash(loaded) == resume.config_hash(config)
  workdir_lib.check_model_config(run, config)
  config.model.routing.window += 1
  with pytest.raises(errors.ConfigError, match=r"model\.routing\.window="):
    workdir_lib.check_model_config(run, config)


def test_sample_output_goes_to_the_bucket(tmp_path, monkeypatch):
  """sample --output=gs://...: text and PNG grids are written through
  etils.epath to the bucket, not to a local folder named after the URL."""
  from routing_jax import cli_checks  # pylint: disable=g-import-not-at-top
  from routing_jax.data import images  # pylint: disable=g-import-not-at-top

  fake_bucket.install(tmp_path / "bucket")
  monkeypatch.chdir(tmp_path)
  text_url = "fakegs://b/samples/out.txt"
  cli_checks.prepare_output_file(text_url, is_image=False)
  cli_checks.write_output_text(text_url, "ROMEO:\nhi")
  assert (tmp_path / "bucket/b/samples/out.txt").read_text() == "ROMEO:\nhi"
  png_url = "fakegs://b/samples/grid.png"
  cli_checks.prepare_output_file(png_url, is_image=True)
  images.save_png_grid(np.zeros((2, 4, 4, 1), np.uint8), png_url)
  png = (tmp_path / "bucket/b/samples/grid.png").read_bytes()
  assert png.startswith(b"\x89PNG")
  assert not (tmp_path / "fakegs:").exists()  # nothing local by mistake
  with pytest.raises(errors.UserInputError, match="names a folder"):
    cli_checks.prepare_output_file("fakegs://b/samples", is_image=False)


@pytest.mark.parametrize(
    "name, arg, digest",
    [
        ("shakespeare", None, "ca35a1f200af3877"),
        ("shakespeare", "long,variant=routing", "d970416cb1383f6d"),
        ("shakespeare", "routing=topk", "ca919f1764194b44"),
        ("enwik8", "variant=12k", "7038e637d22d5944"),
        ("cifar10", "variant=routing_last2", "7b68089f7d1dd359"),
        ("imagenet64", None, "999b86d9f0e7c353"),
    ],
)
def test_checkpoint_hashes_of_existing_runs_do_not_move(name, arg, digest):
  """The model hash each checkpoint records, as computed before the routing
  fields moved into model.routing: a changed value would refuse to resume
  every run saved until now."""
  import importlib  # pylint: disable=g-import-not-at-top
  from routing_jax.training import resume  # pylint: disable=g-import-not-at-top

  config = importlib.import_module(f"experiments.{name}").get_config(arg)
  assert resume.config_hash(config) == digest
