# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Every paper config builds its model abstractly (nothing allocated), and
its parameter count matches an independent count from its hyperparameters.
"""

import importlib
import re

import jax
import jax.numpy as jnp
import pytest

from routing_jax.nn import model_config
from routing_jax.nn.model import TransformerLM
from routing_jax.training import hardware
from routing_jax.training import sharding
from routing_jax.training import train

CONFIGS = [
    ("cifar10", None),
    ("cifar10", "variant=local"),
    ("cifar10", "variant=full"),
    ("cifar10", "variant=routing_last2"),
    ("imagenet64", None),
    ("wikitext103", None),
    ("wikitext103", "variant=1k"),
    ("enwik8", "variant=8k"),
    ("enwik8", "variant=12k"),
    ("enwik8", "variant=local8k"),
    ("pg19", None),
    ("pg19", "variant=local"),
    ("fashion_mnist", None),
    ("shakespeare", None),
]


def expected_params(c: model_config.ModelConfig) -> int:
  """The count written out from the hyperparameters (docs/paper.md §3)."""
  hd, h, d = c.d_model, c.num_heads, c.d_model // c.num_heads
  e = c.emb_dim or hd
  total = 0
  routing = model_config.parse_routing_layers(c.routing_layers, c.num_layers)
  for routed in routing:
    r = c.num_routing_heads if routed else 0
    local = h - r
    if local:
      total += 4 * hd * local * d  # q, k, v, out
      if c.position == "relative":
        total += 2 * (2 * c.max_relative_position + 1) * d
    if r:
      total += (3 if c.routing.share_qk else 4) * hd * r * d
      if c.position == "relative":  # cluster-relative tables
        total += 2 * (2 * c.max_relative_position + 1) * d
    total += 2 * 2 * hd  # two LayerNorms
    if c.ffn == "geglu":
      total += 3 * hd * c.d_ff
    else:
      total += 2 * hd * c.d_ff + c.d_ff + hd
  if c.norm == "pre":
    total += 2 * hd
  if c.position == "learned2d":
    rows, cols, ch = c.image_shape
    total += 256 * ch * hd + (rows + cols) * ch * hd + hd * 256 + 256
  else:
    v = -(-c.vocab_size // c.vocab_multiple) * c.vocab_multiple  # padded
    total += v * e
    if e != hd:
      total += 2 * (e * hd) + hd + e  # emb_dense in, out_emb out
    if not c.tie_embeddings:
      total += e * v + v
  return total


@pytest.mark.parametrize("name,arg", CONFIGS)
def test_paper_config_param_count(name, arg):
  config = importlib.import_module(f"experiments.{name}").get_config(arg)
  cfg = train.validate_config(config)
  model = TransformerLM(cfg)
  length = min(cfg.max_len, 2 * cfg.query_block)
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, length), jnp.int32))
  )
  count = sum(x.size for x in jax.tree.leaves(shapes["params"]))
  # The paper settings train with the bf16 activation policy (float32
  # params), as does Fashion-MNIST at full size; Shakespeare stays float32.
  paper = name != "shakespeare"
  assert (cfg.dtype, cfg.param_dtype) == (
      "bfloat16" if paper else "float32",
      "float32",
  ), (name, arg)
  want = expected_params(cfg)
  assert abs(count - want) <= 0.01 * want, (name, arg, count, want)
  # k-means state: [heads, clusters, d] centroids and sums + counts, and
  # an update counter per head.
  routed = sum(
      model_config.parse_routing_layers(cfg.routing_layers, cfg.num_layers)
  )
  if cfg.num_routing_heads:
    km = sum(x.size for x in jax.tree.leaves(shapes.get("kmeans", {})))
    r, k, d = cfg.num_routing_heads, cfg.routing.num_clusters, cfg.head_dim
    assert km == routed * (2 * r * k * d + r * k + r)


@pytest.mark.slow
def test_dryrun_cli_fakes_the_hardwares_devices_and_says_it_fits():
  """8 H100s wanted, 8 CPUs here: the dry run re-executes itself on 8 fake
  devices, compiles the train step and ends with the fits line."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top

  arg = "small"
  out = subprocess.run(
      [
          sys.executable,
          "-m",
          "routing_jax.dryrun",
          f"--config=experiments/pg19.py:{arg}",
          "--config.hardware=8xh100_80gb",
      ],
      capture_output=True,
      text=True,
      timeout=300,
      check=True,
      cwd=__import__("pathlib").Path(__file__).parents[1],
  ).stdout
  config = importlib.import_module("experiments.pg19").get_config(arg)
  want = expected_params(train.validate_config(config))
  assert f"parameters: {want:,}" in out
  assert (
      "over 8 devices (cpu)" in out and "compiled train step per device" in out
  )
  assert (
      "compiler: XLA:CPU (8 fake devices): the memory figures are a CPU"
      " estimate for h100_80gb, not its compiler's; compiling for a GPU"
      " needs the GPUs (benchmarks/gpu_all.sh)"
  ) in out
  lines = out.strip().splitlines()
  assert lines[-2] == (
      "usable per device: 59.74 GiB (75% of 79.6 GiB, what JAX preallocates"
      " (XLA_PYTHON_CLIENT_MEM_FRACTION))"
  )
  assert re.fullmatch(
      r"fits 8xh100_80gb: yes \(\d+\.\d\d GiB of 59\.7 GiB per device\)",
      lines[-1],
  ), lines[-1]


@pytest.mark.parametrize(
    "name,arg",
    [c for c in CONFIGS if c[0] not in ("fashion_mnist", "shakespeare")],
)
def test_paper_configs_name_their_hardware_and_mesh(name, arg):
  """The target accelerator resolves, the mesh covers it, layers scan."""
  config = importlib.import_module(f"experiments.{name}").get_config(arg)
  train.validate_config(config)  # checks hardware and mesh together
  hw = hardware.parse(config.hardware)
  assert hw.num_devices == 32 and hw.kind.name == "tpu_v3"
  shape = sharding.mesh_shape(config.mesh, hw.num_devices)
  assert config.data.batch_size % (shape[0] * shape[1]) == 0
  assert config.model.scan_layers
  small = importlib.import_module(f"experiments.{name}").get_config(
      "small" if arg is None else f"{arg},small"
  )
  assert small.hardware == ""  # CPU-sized variants target no accelerator
