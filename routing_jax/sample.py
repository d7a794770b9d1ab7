# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Sample from a trained run: text to stdout or a file, images as a PNG grid.

  python -m routing_jax.sample --workdir=/tmp/shakespeare \
      --prompt="ROMEO:" --length=400
  python -m routing_jax.sample --workdir=/tmp/fmnist --num_samples=16 \
      --output=/tmp/samples.png

The run's config is read from its workdir (config.json); --config gives
it explicitly instead (its model section must be the run's).

Decoding uses the model's cache (constant memory per token with causal
routing and relative or rotary positions).
"""

from absl import flags
from ml_collections import config_flags

from routing_jax import cli
from routing_jax import cli_checks
from routing_jax import distributed
from routing_jax import errors
from routing_jax import multihost
from routing_jax import xla_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Config file (default: the run's own, config.json in --workdir).",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's workdir.")
_PROMPT = flags.DEFINE_string("prompt", "", "Text prompt (text models).")
# Bounds are checked when the flags are parsed, before anything loads.
_LENGTH = flags.DEFINE_integer(
    "length", 256, "Tokens to generate (text).", lower_bound=1
)
_NUM = flags.DEFINE_integer("num_samples", 1, "Samples (rows).", lower_bound=1)
_TEMPERATURE = flags.DEFINE_float(
    "temperature", 0.8, "0: greedy.", lower_bound=0.0
)
_TOP_K = flags.DEFINE_integer("top_k", 0, "0: off.", lower_bound=0)
_TOP_P = flags.DEFINE_float("top_p", 0.95, "In (0, 1]; 1: off.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_OUTPUT = flags.DEFINE_string(
    "output", "", "Write text here (default stdout); images need a .png."
)
flags.mark_flags_as_required(["workdir"])
flags.register_validator(
    "top_p", lambda p: 0.0 < p <= 1.0, "--top_p must be in (0, 1]"
)


def main(argv):
  del argv
  xla_flags.apply_cpu_defaults()  # before jax starts a backend
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from routing_jax.nn import generation  # pylint: disable=g-import-not-at-top
  from routing_jax.data import images  # pylint: disable=g-import-not-at-top
  from routing_jax import inference  # pylint: disable=g-import-not-at-top

  # Everything the flags and config can get wrong, before any restore.
  config, cfg = cli_checks.run_config(_CONFIG.value, _WORKDIR.value)
  cli_checks.prepare_output_file(_OUTPUT.value, cfg.is_image)
  try:  # With the shortest prompt; the real one is checked below.
    generation.check_decode_length(
        cfg, cfg.max_len if cfg.is_image else 1 + _LENGTH.value
    )
  except ValueError as e:
    raise errors.UserInputError(f"{e}; use a smaller --length") from e
  distributed.initialize()
  cli_checks.mesh_for_here(config, saved=_CONFIG.value is None)
  try:
    trainer, state, datasets, _ = inference.restore(config, _WORKDIR.value)
  except FileNotFoundError as e:
    raise errors.WorkdirError(str(e)) from e
  cfg = trainer.model.config
  b = _NUM.value
  if cfg.is_image:
    prompt = np.zeros((b, 1), np.int32)
    total = cfg.max_len + 1
  else:
    ids = (
        np.asarray(datasets.encode(_PROMPT.value), np.int32)
        if (_PROMPT.value)
        else np.zeros((0,), np.int32)
    )
    prompt = np.tile(np.concatenate([[0], ids])[None], (b, 1)).astype(np.int32)
    total = prompt.shape[1] + _LENGTH.value
  try:
    generation.check_decode_length(cfg, total - 1 if cfg.is_image else total)
  except ValueError as e:
    raise errors.UserInputError(
        f"{e}; use a shorter --prompt or --length"
    ) from e
  # The variables stay where the mesh put them (with several processes,
  # sharded over them): every process runs the sampler (a collective).
  variables = {"params": state.params, "kmeans": state.kmeans}
  # The prompt (start token included) goes through one prefill pass.
  with jax.set_mesh(trainer.mesh):
    out = generation.sample(
        trainer.model,
        variables,
        prompt,
        total,
        rng=jax.random.PRNGKey(_SEED.value),
        temperature=_TEMPERATURE.value,
        top_k=_TOP_K.value,
        top_p=_TOP_P.value,
    )
  tokens = np.asarray(jax.device_get(out.tokens))[:, 1:]
  multihost.check_same(tokens.tobytes(), "the sampled tokens")
  if not distributed.is_primary():  # every process sampled; one writes
    return
  if cfg.is_image:
    imgs = [images.sequence_to_image(t, cfg.image_shape) for t in tokens]
    images.save_png_grid(np.stack(imgs), _OUTPUT.value)
    print(f"wrote {b} images to {_OUTPUT.value}")
    return
  texts = [datasets.decode(t) for t in tokens]
  text = "\n\n-----\n\n".join(texts)
  if _OUTPUT.value:
    try:
      cli_checks.write_output_text(_OUTPUT.value, text)
      return
    except OSError as e:  # The generated text is not lost: it goes to stdout.
      print(text, flush=True)
      raise errors.UserInputError(
          f"--output={_OUTPUT.value}: {e}; the text went to stdout instead"
      ) from e
  print(text)


def run():
  """The `routing-jax-sample` console script."""
  cli.run(main)


if __name__ == "__main__":
  run()
