# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""What docs/paper.md says about defaults is what the code does."""

import pathlib
import re

import pytest

import routing_jax as rj

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _defaults_table():
  text = (ROOT / "docs" / "paper.md").read_text()
  section = text.split("### k-means defaults by routing mode", 1)[1]
  rows = {}
  for line in section.splitlines():
    m = re.match(r"\| `([\w.]+)`[^|]*\| (\S+) \| (\S+) \|", line)
    if m:
      rows[m.group(1)] = {"causal": m.group(2), "topk": m.group(3)}
  return rows


@pytest.mark.parametrize("mode", ["causal", "topk"])
def test_kmeans_defaults_table_matches_the_code(mode):
  rows = _defaults_table()
  config = rj.RoutingConfig(mode=mode, share_qk=False)
  module = rj.RoutingAttention(
      num_heads=1, head_dim=4, config=config, causal=mode == "causal"
  )
  settings = module.kmeans_settings()  # what the module's k-means gets
  code = {
      "kmeans.prior_count": settings.prior_count,
      "kmeans.data_init": settings.data_init,
      "kmeans.revive_threshold": settings.revive_threshold,
      "fit_queries": config.fits_queries,
  }
  assert set(rows) == set(code)
  for name, value in code.items():
    assert rows[name][mode] == str(value), (name, mode)


def test_no_doc_promises_that_exclude_self_falls_back_to_self():
  """exclude_self gives 0 when nothing else is visible (routing tests pin
  it); no text may say the token then sees itself."""
  texts = [p.read_text() for p in (ROOT / "docs").glob("*.md")]
  texts.append((ROOT / "routing_jax" / "nn" / "model_config.py").read_text())
  texts.append((ROOT / "README.md").read_text())
  for text in texts:
    assert "only when nothing else is visible" not in text
