# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
r"""Shakespeare (bytes): the main job, a small Routing Transformer on 2 CPUs.

Run (from the repository root; the corpus ships inside the package):

  python -m routing_jax.main --config=experiments/shakespeare.py \
      --workdir=/tmp/shakespeare
  # Same budget, local attention only (the baseline to beat):
  python -m routing_jax.main --config=experiments/shakespeare.py:variant=local \
      --workdir=/tmp/shakespeare_local
  # The paper's balanced top-k routing (leaks the future, see docs/paper.md §4.2):
  python -m routing_jax.main --config=experiments/shakespeare.py:routing=topk \
      --workdir=/tmp/shakespeare_topk
  # About a minute on 2 cores (2 layers of 64, 200 steps):
  python -m routing_jax.main --config=experiments/shakespeare.py:small \
      --workdir=/tmp/shakespeare_small
  # Sequences of 2048 bytes: routing, local, full attention or the hybrid
  # (2 local + 2 dense heads) at equal parameters
  # (benchmarks/long_context_lm.py runs them, 3 seeds):
  python -m routing_jax.main \
      --config=experiments/shakespeare.py:long,variant=full \
      --workdir=/tmp/shakespeare_long_full
  # A few seconds, for tests (3 steps):
  python -m routing_jax.main --config=experiments/shakespeare.py:tiny \
      --workdir=/tmp/shakespeare_tiny

Data: the 38 plays (5.0 MB of text), split by whole plays, modelled as
bytes. Reference points on this corpus: a unigram byte model has 4.83
bits/byte and a bigram model 3.59 (measured on the whole corpus); the
README gives what this config reaches on the validation plays. Not a paper
setting: no paper result.

Model: the paper's text model (geglu FFN, relative positions, k-means
routing with 2 local + 2 routing heads in every layer) at CPU size, with
AdamW and a cosine schedule instead of the paper's Adafactor schedule: a
short run gains from ending at a small learning rate, and the paper's
schedule stays at 0.01 for its first 10k steps. Pre-norm is our choice for
a short run at a high peak learning rate; `norm="post"` is the paper's.
Exactly causal routing (docs/causal_routing.md) is the default.

Hardware and steps: 600 steps of 16 x 256 bytes on 2 CPU cores.
"""

from experiments import common

VARIANTS = ("routing", "local", "full", "hybrid", "routing_default")


def get_config(arg=None):
  """Returns the Shakespeare config.

  Args:
    arg: what follows ":" in `--config=experiments/shakespeare.py:ARG`, e.g.
      "variant=local" or "tiny"; None for the default.
      Keys: variant=routing|local|full|hybrid|routing_default (all but
      routing and local need long),
      routing=causal|topk, small, tiny, long.

  Raises:
    ValueError: for an unknown key, a bad value, or small with tiny.
  """
  arg = common.parse_experiment_arg(
      arg, VARIANTS, "routing", tiny=False, long=False
  )
  if sum((arg.small, arg.tiny, arg.long)) > 1:
    raise ValueError("config arg: small, tiny and long exclude each other")
  if arg.variant in ("full", "hybrid", "routing_default") and not arg.long:
    raise ValueError(
        f"config arg: variant={arg.variant} needs long (sequences of "
        "2048, where full attention differs from local)"
    )

  c = common.base_config()
  m = c.model
  # Sized so that the main job, install included, finishes within 15
  # minutes on 2 cores; 600 steps see 2.5M bytes, about half an epoch.
  m.num_layers = 4
  m.d_ff = 384
  m.norm = "pre"
  # Largest distance inside a local block pair is q + m - 1 = 127, so the
  # relative table has 129 entries. Each routing query sees up to the
  # default window of 64 earlier same-cluster keys, k = 4.
  common.set_local_blocks(m, 64)
  m.routing.mode = arg.routing
  routed = ("routing", "hybrid", "routing_default")
  common.set_routing_heads(m, 2 if arg.variant in routed else 0)
  # About one epoch: too little data seen twice to need dropout.
  m.residual_dropout = 0.0
  common.set_data(c, "shakespeare", 256, batch_size=16)

  t = c.train
  t.optimizer = "adamw"
  t.lr = 3e-3
  t.schedule = "cosine"
  t.warmup_steps = 60
  t.weight_decay = 0.1
  t.grad_clip = 1.0
  t.steps = 600
  t.eval_every = 200
  t.checkpoint_every = 200
  t.sample_length = 512
  t.sample_prompt = "HAMLET:\n"
  common.set_mesh(c)

  if arg.small:
    # About a minute: the same structure, 2 layers of 64.
    common.shrink_for_cpu(
        c, seq_len=128, d_ff=192, window=32, block=32, data_name=None
    )
    common.set_smoke_training(
        t,
        steps=200,
        log_every=20,
        eval_every=100,
        eval_batches=4,
        sample_length=128,
    )
  if arg.long:
    # One sequence of 2048 bytes (several scenes) per step and 2 layers,
    # sized so that full attention trains within 15 minutes on 2 cores.
    # RoPE for every head: Shaw tables cost full attention an
    # [n, n, head_dim] gather per layer, which made it 16x slower than
    # local. Local heads see up to 256 back. routing: 2 local + 2 content-
    # routing heads (16 clusters, windows of 256 members, dense for the
    # first 100 steps); local: 4 local heads; full: 4 heads over the whole
    # past; hybrid: the routing variant with its routing heads made plain
    # dense heads; routing_default: 2 local + 2 routing heads with the
    # library's defaults (shared Q/K, windows of 64, no warm-up), to
    # measure what the content preset costs or gains on text. No position
    # parameters anywhere: routing, local, full and hybrid have exactly the
    # same parameter count (routing_default's shared Q/K has no key
    # projection, so fewer).
    common.set_data(c, "shakespeare", 2048, batch_size=1)
    m.num_layers = 2
    m.position = "rope"
    common.set_local_blocks(m, 128)
    m.routing.num_clusters = 16
    if arg.variant == "routing":
      common.set_content_routing(m, window=256, warmup_steps=100)
    if arg.variant == "full":
      m.query_block, m.memory_flange = 2048, 0
    if arg.variant == "hybrid":  # the routing variant, routing heads dense
      m.dense_routing_heads = True
    t.steps = 600
    t.eval_every = 300
    t.checkpoint_every = 300
    t.eval_batches = 8
  if arg.tiny:
    # For tests: a few steps that still exercise every code path (both
    # head kinds, several blocks and clusters, eval, checkpoint, sampling).
    common.shrink_for_cpu(
        c,
        seq_len=64,
        d_model=32,
        d_ff=64,
        num_heads=2,
        window=16,
        block=16,
        data_name=None,
    )
    m.num_routing_heads = 1 if arg.variant == "routing" else 0
    m.routing.num_clusters = 2
    common.set_smoke_training(
        t,
        steps=3,
        warmup_steps=1,
        log_every=1,
        eval_every=3,
        eval_batches=1,
        sample_length=16,
    )
    t.eval_sample_length = 0  # a decoder compile per test run otherwise
  return c
