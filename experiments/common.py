"""The base config every experiment starts from: every field, with its default.

Experiment files call `base_config()` and override what their paper setting
changes. Only ml_collections is imported here, so configs load in
milliseconds and never pull in jax.

Sections:
  model  -> routing_jax.ModelConfig.from_config (validated there)
  data   -> routing_jax.input_pipeline
  train  -> routing_jax.train (optimizer, schedule, loop, checkpoints)
  mesh   -> routing_jax.sharding (device mesh axis sizes, -1 fills the rest)
"""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  """Returns a ConfigDict holding every field with its default value."""
  c = ml_collections.ConfigDict()

  m = c.model = ml_collections.ConfigDict()
  m.vocab_size = 256  # bytes; images use 256 sub-pixel values
  m.num_layers = 2
  m.d_model = 128  # hidden size H
  m.emb_dim = 0  # factorised embedding size E (0: no factorisation, E = H)
  m.num_heads = 4  # heads per layer (local + routing)
  m.num_routing_heads = 2  # of num_heads, in the layers that route
  # Which layers route: "all", "none", "last:N", "skip_first:N" or "0,3,5".
  m.routing_layers = "all"
  m.d_ff = 512
  m.ffn = "geglu"  # "geglu" (text, no biases) or "relu" (images, biases)
  m.norm = "post"  # "post" (the paper's LN(x + f(x))) or "pre"
  m.tie_embeddings = False  # the paper's output layer is untied
  m.query_block = 64  # local attention query block q
  m.memory_flange = 64  # local attention memory flange m
  m.routing = "causal"  # "causal" (exactly causal) or "topk" (the paper's)
  m.causal = True
  m.num_clusters = 4  # k
  m.window = 64  # w
  m.share_qk = True
  m.routing_logit_scale = 1.0  # LN(q)·LN(k) scale; 1.0 is the reference
  m.kmeans_decay = 0.999
  m.commitment_weight = 1e-4  # beta
  # "relative" (Shaw, the paper's text models), "rope", "none", or
  # "learned2d" (row/column tables, the paper's image models).
  m.position = "relative"
  m.max_relative_position = 65
  m.image_shape = (0, 0, 0)  # (H, W, C) for image models, zeros for text
  m.max_len = 1024  # longest sequence (learned positions, decoding cache)
  m.residual_dropout = 0.1
  m.attention_dropout = 0.0
  m.relu_dropout = 0.0
  m.embedding_dropout = 0.0
  m.target_dropout = 0.0
  m.init_scale = 0.2  # uniform_unit_scaling gain of the reference
  m.dtype = "float32"  # activations
  m.param_dtype = "float32"
  m.scan_layers = False
  m.remat_policy = "none"  # "none", "full", "dots_saveable", ...

  d = c.data = ml_collections.ConfigDict()
  d.name = "shakespeare"
  d.seq_len = 256
  d.batch_size = 8  # global batch, in sequences
  d.data_dir = ""  # TFDS data dir ("" = ~/tensorflow_datasets)
  d.manual_dir = ""  # where a user put downloaded archives
  d.text_files = ""  # glob, for name="text_files"
  d.eval_split = "validation"
  d.tokenizer_vocab_size = 32768  # pg19 sentencepiece
  d.seed = 0
  d.num_workers = 0  # grain worker processes (0: in-process)

  t = c.train = ml_collections.ConfigDict()
  t.steps = 1000
  t.optimizer = "adafactor"  # "adafactor" (the paper's) or "adamw"
  t.lr = 0.01
  t.schedule = "rsqrt"  # "rsqrt" (the paper's), "cosine", "constant"
  t.warmup_steps = 10000
  t.b1 = 0.9  # adamw
  t.b2 = 0.98  # adamw
  t.weight_decay = 0.0
  t.grad_clip = 0.0  # global norm; 0 disables
  t.grad_accum_steps = 1
  t.kmeans_loss_weight = 1.0
  t.seed = 0
  t.log_every = 50
  t.eval_every = 500
  t.eval_batches = 16
  t.checkpoint_every = 500
  t.keep_checkpoints = 3
  t.async_checkpointing = True
  t.sample_length = 256  # characters sampled at the end of training
  t.sample_prompt = ""

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
