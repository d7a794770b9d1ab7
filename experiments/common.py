# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The base config every experiment starts from: every field, with its default.

Experiment files call `base_config()` and override what their paper setting
changes. Only ml_collections and the jax-free config modules of routing_jax
(model, routing and training defaults, mode names) are imported here, so
configs load in milliseconds and never pull in jax.

Sections:
  model  -> routing_jax.ModelConfig.from_config (validated there); the
            routing heads' settings in model.routing (RoutingConfig), the
            k-means ones in model.routing.kmeans (KMeansConfig)
  data   -> routing_jax.data.input_pipeline
  train  -> routing_jax.training.train_config.TrainConfig (optimizer,
            schedule, loop, checkpoints)
  mesh   -> routing_jax.training.sharding (device mesh axis sizes, -1 fills
            the rest)
  hardware -> routing_jax.training.hardware (the target accelerator, for the
            dry run)

The helpers below hold what several experiment files share: the arg
checks, the paper's text and image model defaults, its training section,
and the shrink to a CPU-sized `small` model. Each sets fields in place.
"""

import dataclasses
import typing

import ml_collections

from routing_jax.nn import modes
from routing_jax.nn.model_config import ModelConfig
from routing_jax.training.train_config import TrainConfig


def _section(cls) -> ml_collections.ConfigDict:
  """A ConfigDict of a config dataclass's fields and defaults, nested
  dataclasses as nested sections."""
  m = ml_collections.ConfigDict()
  for field in dataclasses.fields(cls):
    default = field.default
    if dataclasses.is_dataclass(default):
      default = _section(type(default))
    elif default is None:  # Optional[T]: a typed placeholder, settable to T
      inner = [t for t in typing.get_args(field.type) if t is not type(None)]
      default = ml_collections.FieldReference(None, field_type=inner[0])
    m[field.name] = default
  return m


def model_section() -> ml_collections.ConfigDict:
  """The `model` section: every ModelConfig field with its default, the
  routing fields in `model.routing` (documented in
  routing_jax/nn/model_config.py and routing_config.py)."""
  return _section(ModelConfig)


def base_config() -> ml_collections.ConfigDict:
  """Returns a ConfigDict holding every field with its default value."""
  c = ml_collections.ConfigDict()

  c.model = model_section()

  d = c.data = ml_collections.ConfigDict()
  d.name = "shakespeare"
  d.seq_len = 256
  d.batch_size = 8  # global batch, in sequences
  # > 0: the global batch is this many rows per device along the batch axes
  # (data x fsdp), and train.lr_batch_scaling says how lr follows
  # (docs/sharding.md, "Scaling to N devices").
  d.per_device_batch_size = 0
  d.data_dir = ""  # TFDS data dir ("" = ~/tensorflow_datasets)
  d.manual_dir = ""  # where a user put downloaded archives
  d.text_files = ""  # glob, for name="text_files"
  d.eval_split = "validation"
  # "bytes" or "sentencepiece" (text_files: subwords, still reported in
  # bits per byte; pg19 always uses sentencepiece).
  d.tokenizer = "bytes"
  d.tokenizer_vocab_size = 32768  # sentencepiece pieces (pg19, text_files)
  # text_files: a given sentencepiece .model instead of training one on the
  # train split (its own vocabulary size then applies).
  d.tokenizer_model = ""
  d.seed = 0
  d.num_workers = 0  # grain worker processes (0: in-process)

  # Fields and defaults: routing_jax/training/train_config.py.
  c.train = _section(TrainConfig)

  # The accelerator the setting is sized for, e.g. "tpu_v3_32" (32 TPU v3
  # cores) or "8xh100_80gb" (routing_jax/training/hardware.py); "" for none. The
  # dry run checks that a step fits it on `mesh`.
  c.hardware = ""

  mesh = c.mesh = ml_collections.ConfigDict()
  mesh.data = -1
  mesh.fsdp = 1
  mesh.tensor = 1
  return c


def parse_arg(arg, **defaults):
  """Parses `key=value,flag` strings from `--config=file.py:ARG`.

  Values take the type of their default: bools accept a bare key
  ("small") or key=true/false; ints and floats are converted.

  Raises:
    ValueError: naming an unknown key or a value of the wrong type.
  """
  out = dict(defaults)
  if not arg:
    return ml_collections.ConfigDict(out)
  for part in arg.split(","):
    part = part.strip()
    if not part:
      continue
    key, sep, value = part.partition("=")
    if key not in defaults:
      raise ValueError(
          f"config arg: unknown key {key!r}; known keys: {sorted(defaults)}"
      )
    default = defaults[key]
    if not sep:
      if not isinstance(default, bool):
        raise ValueError(f"config arg: {key!r} needs a value ({key}=...)")
      out[key] = True
    elif isinstance(default, bool):
      if value.lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"config arg: {key!r} must be true or false")
      out[key] = value.lower() in ("true", "1")
    elif isinstance(default, int):
      try:
        out[key] = int(value)
      except ValueError as e:
        raise ValueError(f"config arg: {key!r} must be an integer") from e
    elif isinstance(default, float):
      try:
        out[key] = float(value)
      except ValueError as e:
        raise ValueError(f"config arg: {key!r} must be a number") from e
    else:
      out[key] = value
  return ml_collections.ConfigDict(out)


ROUTING_MODES = modes.ROUTINGS  # ours (exactly causal), the paper's


def check_choice(name, value, choices):
  """Checks that config arg `name` has one of `choices`.

  Raises:
    ValueError: naming the key, its value and the choices (as given).
  """
  if value not in choices:
    raise ValueError(f"config arg: {name}={value!r}; expected one of {choices}")


def parse_experiment_arg(arg, variants, variant, **extra):
  """Parses the args every experiment takes, then checks their choices.

  Args:
    arg: the `--config=file.py:ARG` string, or None.
    variants: the allowed variant names (shown as given in errors).
    variant: the default variant.
    **extra: further keys with their defaults, as for `parse_arg`.

  Returns:
    A ConfigDict with variant, routing (causal|topk), small and `extra`.

  Raises:
    ValueError: naming an unknown key or a bad value.
  """
  parsed = parse_arg(
      arg, variant=variant, routing="causal", small=False, **extra
  )
  check_choice("variant", parsed.variant, variants)
  check_choice("routing", parsed.routing, ROUTING_MODES)
  return parsed


def set_paper_text_model(
    m,
    *,
    vocab_size,
    d_model,
    d_ff,
    routing,
    emb_dim=0,
    attention_dropout=0.0,
    relu_dropout=0.0,
    embedding_dropout=0.0,
):
  """Sets the paper's text-model defaults (docs/paper.md §3.4, §5.4) on `m`.

  GEGLU FFN without biases, post-norm, Shaw relative positions, residual
  dropout 0.1 (the T2T default the text sets never override), no target
  dropout, init scale 0.2. Layer and head counts are left to the caller.
  """
  m.vocab_size = vocab_size
  m.vocab_multiple = 128
  m.d_model = d_model
  m.emb_dim = emb_dim  # 0: E = H, no factorised embedding
  m.d_ff = d_ff
  m.ffn = "geglu"
  m.norm = "post"
  m.position = "relative"
  m.residual_dropout = 0.1
  m.attention_dropout = attention_dropout
  m.relu_dropout = relu_dropout
  m.embedding_dropout = embedding_dropout
  m.target_dropout = 0.0
  m.init_scale = 0.2
  m.routing.mode = routing
  m.dtype = "bfloat16"


def set_paper_image_model(
    m, *, image_shape, num_layers, d_model, d_ff, routing
):
  """Sets the paper's image-model defaults (docs/paper.md §3.3) on `m`.

  Sub-pixels in raster order over 256 values, learned row/column
  positions, ReLU FFN with biases, post-norm, residual dropout 0.3 and no
  other dropout, init scale 0.2. Heads are left to the caller.
  """
  m.vocab_size = 256
  m.image_shape = image_shape
  m.position = "learned2d"
  m.num_layers = num_layers
  m.d_model = d_model
  m.d_ff = d_ff
  m.ffn = "relu"
  m.norm = "post"
  m.residual_dropout = 0.3
  m.attention_dropout = 0.0
  m.relu_dropout = 0.0
  m.embedding_dropout = 0.0
  m.target_dropout = 0.0
  m.init_scale = 0.2
  m.routing.mode = routing
  m.dtype = "bfloat16"


def set_local_blocks(m, block):
  """Local attention with query block = memory flange = `block`.

  With relative positions the table covers the whole local span: the
  largest distance in a block pair is q + m - 1, so 2 * block + 1 entries.
  Call after `m.position` is set.
  """
  m.query_block = block
  m.memory_flange = block
  if m.position == "relative":
    m.max_relative_position = 2 * block + 1


def set_routing_heads(m, num_routing_heads, routing_layers="all"):
  """Routes `num_routing_heads` heads in `routing_layers`; 0: local only."""
  m.num_routing_heads = num_routing_heads
  m.routing_layers = routing_layers if num_routing_heads else "none"


def set_content_routing(m, *, window, warmup_steps, decay=0.99, warmup="dense"):
  """Causal routing set up to learn far content retrieval.

  Separate Q/K, centroids fitted to the keys with each query routed to the
  key cluster it matches best, a faster k-means, and a dense warm-up of the
  routing heads: the combination that learned associative recall in
  benchmarks/long_range.py (docs/causal_routing.md explains why each part
  matters). `window` counts members of a cluster: with separate Q/K a
  token can be a member twice (as key and as query), so about twice the
  shared-Q/K window sees as many keys.
  """
  m.routing.mode = "causal"
  m.routing.share_qk = False
  m.routing.fit_queries = False
  m.routing.window = window
  m.routing.kmeans.decay = decay
  m.routing.warmup_steps = warmup_steps
  m.routing.warmup = warmup


def set_data(c, name, seq_len, *, batch_size=32, eval_split="validation"):
  """Sets the data section; the model's max_len follows seq_len."""
  c.data.name = name
  c.data.seq_len = seq_len
  c.data.batch_size = batch_size  # global, in sequences
  c.data.eval_split = eval_split
  c.model.max_len = seq_len


def set_paper_training(
    t, *, steps, eval_every, sample_length, eval_batches=64, weight_decay=0.0
):
  """Sets the paper's training section (docs/paper.md §5.4) on `t`.

  Adafactor at 0.01 with the rsqrt schedule (0.01 flat for 10k steps, then
  1/sqrt(step)), no gradient clipping; a checkpoint at every evaluation.
  """
  t.optimizer = "adafactor"
  t.lr = 0.01
  t.schedule = "rsqrt"
  t.warmup_steps = 10000
  t.weight_decay = weight_decay
  t.grad_clip = 0.0
  t.steps = steps
  t.log_every = 100
  t.eval_every = eval_every
  t.eval_batches = eval_batches
  t.checkpoint_every = eval_every
  t.checkpoint_every_minutes = 30.0
  t.sample_length = sample_length


def set_smoke_training(
    t,
    *,
    steps=100,
    warmup_steps=20,
    log_every=10,
    eval_every=50,
    eval_batches=2,
    sample_length=None,
):
  """A short run's cadence; a checkpoint at every evaluation.

  sample_length None keeps the current value.
  """
  t.steps = steps
  t.warmup_steps = warmup_steps
  t.log_every = log_every
  t.eval_every = eval_every
  t.eval_batches = eval_batches
  t.checkpoint_every = eval_every
  if sample_length is not None:
    t.sample_length = sample_length


def shrink_for_cpu(
    c,
    *,
    seq_len,
    d_model=64,
    d_ff=128,
    num_heads=4,
    window=64,
    block=32,
    data_name="synthetic",
):
  """Shrinks a config's model and data to a 2-layer CPU size.

  Routing heads, routing layers and clusters are left to the caller, as is
  the training cadence (`set_smoke_training`). The variant targets no
  accelerator: float32, data parallel over whatever devices there are.

  Args:
    c: the config, changed in place.
    seq_len: the new sequence length (and max_len).
    d_model: hidden size.
    d_ff: FFN size.
    num_heads: heads per layer.
    window: routing window w.
    block: local query block = memory flange (see `set_local_blocks`).
    data_name: the dataset (synthetic: nothing to download); None keeps it.
  """
  m = c.model
  m.num_layers = 2
  m.d_model = d_model
  m.d_ff = d_ff
  m.num_heads = num_heads
  m.routing.window = window
  set_local_blocks(m, block)
  m.remat_policy = "none"
  m.scan_layers = False
  m.dtype = "float32"  # CPUs have no fast bf16 matmul
  c.hardware = ""
  set_mesh(c)
  if data_name is not None:
    c.data.name = data_name
  c.data.seq_len = seq_len
  c.data.batch_size = 8  # divisible by the tests' 8 fake devices
  m.max_len = seq_len


def set_remat(m):
  """Keeps only each layer's input for the backward pass, layers scanned.

  Scanned, the backward pass recomputes one layer at a time inside the
  loop; with a python loop of layers XLA may schedule every layer's
  recomputation early and keep all activations anyway (the compiled
  memory of PG-19 showed no saving at all until the layers were scanned).
  """
  m.remat_policy = "full"
  m.scan_layers = True


def set_hardware(c, hardware, *, data=-1, fsdp=1, tensor=1):
  """The accelerator a setting is sized for and its mesh there.

  `python -m routing_jax.dryrun` checks that the train step fits.
  """
  c.hardware = hardware
  set_mesh(c, data=data, fsdp=fsdp, tensor=tensor)


def set_mesh(c, *, data=-1, fsdp=1, tensor=1):
  """Sets the device mesh axis sizes (-1 fills the rest)."""
  c.mesh.data = data
  c.mesh.fsdp = fsdp
  c.mesh.tensor = tensor
