"""Dry run: sizes and per-device memory of a config, allocating nothing.

  python -m routing_jax.dryrun --config=experiments/pg19.py --devices=8 \
      --config.mesh.fsdp=4

Prints the parameter count by group, training FLOPs per token, and, for the
config's mesh, the per-device bytes of the sharded train state and of the
compiled train step (ahead-of-time lowering on abstract shapes; `--devices`
fakes that many CPU devices, so a pod's mesh can be checked on a laptop).
"""

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.",
                                          lock_config=True)
_DEVICES = flags.DEFINE_integer(
    "devices", 0, "Fake this many CPU devices (0: the real devices).")
_COMPILE = flags.DEFINE_bool(
    "compile", True, "Also compile the train step for its memory analysis.")
flags.mark_flags_as_required(["config"])


def param_groups(params) -> dict[str, int]:
  """Parameter count by group (embed, local/routing attention, ffn, ...)."""
  import jax  # pylint: disable=g-import-not-at-top
  groups: dict[str, int] = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    names = [str(getattr(p, "key", getattr(p, "name", p))) for p in path]
    if any(n in ("local", "routing") for n in names):
      group = "attention_local" if "local" in names else "attention_routing"
    elif "ffn" in names:
      group = "ffn"
    elif any("norm" in n for n in names):
      group = "norms"
    elif names[0] == "embed":
      group = "embedding"
    else:
      group = "output"
    groups[group] = groups.get(group, 0) + int(leaf.size)
  return groups


def flops_per_token(cfg, seq_len: int, matmul_params: int) -> dict[str, float]:
  """Analytic FLOPs per token: 2·params for the dense layers plus attention.

  Local heads see about q/2 + m keys, routing heads compute 2w logits per
  query in blocks (plus k centroid scores); training is 3× the forward.
  """
  d = cfg.head_dim
  mask = cfg.routing_mask()
  attn = 0.0
  for routed in mask:
    n_route = cfg.num_routing_heads if routed else 0
    n_local = cfg.num_heads - n_route
    keys_local = min(cfg.query_block / 2 + cfg.memory_flange, seq_len)
    attn += n_local * 4 * keys_local * d
    if n_route:
      keys = 2 * cfg.window if cfg.routing == "causal" else cfg.window
      attn += n_route * (4 * keys * d + 2 * cfg.num_clusters * d)
  fwd = 2.0 * matmul_params + attn
  return {"forward": fwd, "train": 3.0 * fwd}


def main(argv):
  del argv
  if _DEVICES.value:
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count="
                               f"{_DEVICES.value}")
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from routing_jax import sharding  # pylint: disable=g-import-not-at-top
  from routing_jax import train  # pylint: disable=g-import-not-at-top
  from routing_jax import optim  # pylint: disable=g-import-not-at-top
  from routing_jax.model import TransformerLM  # pylint: disable=g-import-not-at-top
  import functools  # pylint: disable=g-import-not-at-top

  config = _CONFIG.value
  try:
    cfg = train.validate_config(config)
  except ValueError as e:
    sys.exit(f"Invalid config: {e}")
  model = TransformerLM(cfg)
  tx = optim.create_optimizer(config.train)
  mesh = sharding.create_mesh(config.mesh)
  rules = sharding.logical_rules()
  init = functools.partial(train.init_state, model, tx,
                           seq_len=config.data.seq_len)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
    shardings = sharding.state_shardings(abstract, mesh, rules)
  state = sharding.unbox(abstract)
  groups = param_groups(state.params)
  total = sum(groups.values())
  print(f"config: {cfg.num_layers} layers, d_model {cfg.d_model}, "
        f"{cfg.num_heads} heads ({cfg.num_routing_heads} routing in "
        f"{sum(cfg.routing_mask())} layers), seq_len {config.data.seq_len}")
  print(f"parameters: {total:,}")
  for k in sorted(groups):
    print(f"  {k:20s} {groups[k]:>15,}")
  kmeans = sum(int(x.size) for x in jax.tree.leaves(state.kmeans))
  print(f"  {'kmeans (EMA state)':20s} {kmeans:>15,}  (not trainable)")
  lookup = groups.get("embedding", 0) - (
      cfg.embed_dim * cfg.d_model if cfg.embed_dim != cfg.d_model else 0)
  fl = flops_per_token(cfg, config.data.seq_len, total - lookup)
  print(f"FLOPs per token: forward {fl['forward']:.3e}, "
        f"train {fl['train']:.3e}")
  print(f"mesh: {dict(mesh.shape)} over {mesh.size} devices")

  def per_device(tree, shard_tree):
    out = 0
    for leaf, sh in zip(jax.tree.leaves(tree), jax.tree.leaves(shard_tree)):
      shape = sh.shard_shape(leaf.shape)
      size = 1
      for s in shape:
        size *= s
      out += size * jnp.dtype(leaf.dtype).itemsize
    return out

  state_bytes = per_device(state, shardings)
  print(f"train state per device: {state_bytes / 2**30:.3f} GiB")
  if _COMPILE.value:
    b, n = config.data.batch_size, config.data.seq_len
    batch = {k: jax.ShapeDtypeStruct((b, n), dt, sharding=sharding.data_sharding(mesh))
             for k, dt in (("inputs", jnp.int32), ("targets", jnp.int32),
                           ("weights", jnp.float32), ("mask", jnp.bool_))}
    abstract_state = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        state, shardings)
    step = jax.jit(
        functools.partial(train.train_step, model=model, tx=tx,
                          accum_steps=config.train.grad_accum_steps,
                          kmeans_weight=config.train.kmeans_loss_weight),
        in_shardings=(shardings, sharding.data_sharding(mesh)),
        out_shardings=(shardings, sharding.replicated(mesh)),
        donate_argnums=(0,))
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      compiled = step.lower(abstract_state, batch).compile()
    mem = compiled.memory_analysis()
    if mem is not None:
      print("compiled train step per device: "
            f"arguments {mem.argument_size_in_bytes / 2**30:.3f} GiB, "
            f"temporaries {mem.temp_size_in_bytes / 2**30:.3f} GiB, "
            f"outputs {mem.output_size_in_bytes / 2**30:.3f} GiB")


if __name__ == "__main__":
  app.run(main)
