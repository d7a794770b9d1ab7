# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Children of `peer_pytorch.py --quality`: one training run each.

Run as `python benchmarks/peer_quality_workers.py '<json spec>'` with the
port's interpreter (side "port") or ours (side "ours"). The run trains the
peer model (peer_workers.port_model / ours_config) on the byte arrays in
spec["data"] (written by peer_quality.py: the embedded corpus' train plays
and its validation windows) until spec["budget_s"] seconds of training
have passed, evaluating at fixed fractions of the budget with the clock
paused. Both sides draw the same batches: batch i of seed s is the same
random windows on both (numpy's generator, seeded with s).

The clock starts before the first training step, so our compilation is
inside the budget (a user waits for it too); evaluation time is not.

Recipes (spec["recipe"]):
  adam_const  the port's example recipe: Adam, constant lr, gradients
              clipped to a global norm.
  adamw_cos   ours (experiments/shakespeare.py's train section): AdamW
              with decoupled weight decay on weights only, a linear warm-up
              over `warmup_steps`, then a cosine to 0 at the end of the
              budget. The budget is wall time, so the cosine's progress is
              the fraction of the budget spent (with a steady step time
              this is the library's step-count cosine).

Final scores: teacher-forced bits/byte on every validation window, and on a
fixed subset of (window, position) pairs both teacher-forced and causally
(position t predicted by a forward over tokens 0..t alone, as generation
sees it). Ours is causal by construction (tested), so its two agree; the
port's differ by what its routing leaks from the future.

Prints `PROGRESS {json}` lines while it runs and one `RESULT {json}`.
"""

import json
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import peer_workers  # pylint: disable=g-import-not-at-top,wrong-import-position

LN2 = math.log(2.0)


def learning_rate(recipe, step, progress):
  """The recipe's lr at optimizer step `step`, `progress` of the budget."""
  lr = recipe["lr"]
  if recipe["name"] == "adam_const":
    return lr
  warm = recipe["warmup_steps"]
  if step < warm:
    return lr * step / warm
  return lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def batches(data, seed, batch, n):
  """Yields [batch, n + 1] uint8 windows of the train bytes, seeded."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(seed)
  train = data["train"]
  while True:
    starts = rng.integers(0, len(train) - n - 1, batch)
    yield np.stack([train[s : s + n + 1] for s in starts])


def bits(logp_target):
  """Mean bits/byte from log-probabilities (nats) of the targets."""
  return float(-logp_target.mean() / LN2)


def run(spec, side):
  """The shared loop; `side` supplies init/step/score for its library."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  data = dict(np.load(spec["data"]))
  valid = data["valid"]  # [windows, n + 1]
  curve_windows = valid[: spec["curve_windows"]]
  pick = data["causal_windows"]
  positions = data["causal_positions"]
  budget = spec["budget_s"]
  evals = [budget * (i + 1) / spec["evals"] for i in range(spec["evals"])]
  stream = batches(data, spec["seed"], spec["batch"], spec["n"])
  side.init(spec)
  train_s, step, curve, losses = 0.0, 0, [], []
  first_step_s = None
  while train_s < budget:
    lr = learning_rate(spec["recipe"], step, train_s / budget)
    t0 = time.perf_counter()
    loss = side.step(next(stream), lr)
    dt = time.perf_counter() - t0
    first_step_s = dt if first_step_s is None else first_step_s
    train_s += dt
    step += 1
    if step % 10 == 0 or step == 1:
      losses.append((step, round(train_s, 2), loss / LN2))
    if not math.isfinite(loss):
      break
    if evals and train_s >= evals[0]:
      while evals and train_s >= evals[0]:
        evals.pop(0)
      t0 = time.perf_counter()
      b = bits(side.logp_targets(curve_windows))
      curve.append({
          "train_s": train_s,
          "step": step,
          "bits_per_byte": b,
          "eval_s": time.perf_counter() - t0,
      })
      print("PROGRESS " + json.dumps(curve[-1]), flush=True)
  t0 = time.perf_counter()
  full = side.logp_targets(valid)  # [windows, n]
  full_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  causal = side.causal_logp(valid[pick], positions)  # [picked, positions]
  causal_s = time.perf_counter() - t0
  return {
      "steps": step,
      "train_s": train_s,
      "first_step_s": first_step_s,
      "steady_step_s": (train_s - first_step_s) / max(step - 1, 1),
      "train_bits": losses,
      "curve": curve,
      "final_bits_per_byte": bits(full),
      "subset_teacher_forced_bits": bits(full[pick][:, positions]),
      "subset_causal_bits": bits(causal),
      "final_eval_s": full_s,
      "causal_eval_s": causal_s,
      "params": side.params(),
      "valid_windows": int(len(valid)),
      "subset": [int(len(pick)), int(len(positions))],
  }


class Port:
  """routing-transformer 1.6.1 on torch."""

  def init(self, spec):
    import torch  # pylint: disable=g-import-not-at-top
    from routing_transformer.autoregressive_wrapper import AutoregressiveWrapper  # pylint: disable=g-import-not-at-top

    self.torch = torch
    torch.manual_seed(spec["seed"])
    self.model = peer_workers.port_model(spec, spec["n"])
    self.wrapper = AutoregressiveWrapper(self.model)
    r = spec["recipe"]
    if r["name"] == "adam_const":
      self.opt = torch.optim.Adam(self.model.parameters(), lr=r["lr"])
    else:  # decoupled decay on weights only, as ours (no norms, no biases)
      decay = [p for p in self.model.parameters() if p.dim() >= 2]
      rest = [p for p in self.model.parameters() if p.dim() < 2]
      self.opt = torch.optim.AdamW(
          [
              {"params": decay, "weight_decay": r["weight_decay"]},
              {"params": rest, "weight_decay": 0.0},
          ],
          lr=r["lr"],
          betas=(r["b1"], r["b2"]),
      )
    self.clip = r["grad_clip"]

  def params(self):
    return sum(p.numel() for p in self.model.parameters())

  def step(self, x, lr):
    torch = self.torch
    self.model.train()
    for g in self.opt.param_groups:
      g["lr"] = lr
    self.opt.zero_grad(set_to_none=True)
    # Cross-entropy plus the port's k-means commitment loss; the centroids'
    # EMA update runs in the backward hook the port registers.
    loss = self.wrapper(torch.from_numpy(x).long(), return_loss=True)
    loss.backward()
    if self.clip > 0:
      torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
    self.opt.step()
    return float(loss)

  def _logp(self, x, chunk=8):
    torch = self.torch
    self.model.eval()
    out = []
    with torch.no_grad():
      for i in range(0, len(x), chunk):
        xs = torch.from_numpy(x[i : i + chunk]).long()
        logits, _ = self.wrapper.net(xs[:, :-1])
        logp = torch.log_softmax(logits.double(), -1)
        out.append(logp.gather(-1, xs[:, 1:, None])[..., 0].numpy())
    return out

  def logp_targets(self, windows):
    import numpy as np  # pylint: disable=g-import-not-at-top

    return np.concatenate(self._logp(windows))

  def causal_logp(self, windows, positions):
    """[windows, positions]: target t+1 from a forward over tokens 0..t."""
    import numpy as np  # pylint: disable=g-import-not-at-top

    torch = self.torch
    self.model.eval()
    out = np.zeros((len(windows), len(positions)))
    with torch.no_grad():
      for j, t in enumerate(positions):
        xs = torch.from_numpy(windows[:, : t + 2]).long()
        # The Autopadder pads the prefix to a multiple of the window with
        # masked tokens; nothing after t is real input.
        logits, _ = self.wrapper.net(xs[:, : t + 1])
        logp = torch.log_softmax(logits[:, t].double(), -1)
        out[:, j] = logp.gather(-1, xs[:, t + 1, None])[:, 0].numpy()
    return out


class Ours:
  """routing-jax: the library's train step, lr passed in per step."""

  def init(self, spec):
    import flax.linen as nn  # pylint: disable=g-import-not-at-top
    import functools  # pylint: disable=g-import-not-at-top
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    import optax  # pylint: disable=g-import-not-at-top
    import routing_jax as rj  # pylint: disable=g-import-not-at-top
    from routing_jax.training import optim  # pylint: disable=g-import-not-at-top
    from routing_jax.training import train  # pylint: disable=g-import-not-at-top

    self.jax, self.jnp = jax, jnp
    n, b, r = spec["n"], spec["batch"], spec["recipe"]
    self.model = rj.TransformerLM(peer_workers.ours_config(spec, n))
    variables = nn.unbox(
        jax.jit(self.model.init)(
            {"params": jax.random.key(spec["seed"])},
            jnp.zeros((b, n), jnp.int32),
        )
    )

    def make(learning_rate):
      parts = [optax.clip_by_global_norm(r["grad_clip"])]
      if r["name"] == "adam_const":
        parts.append(optax.adam(learning_rate))
      else:
        parts.append(
            optax.adamw(
                learning_rate,
                b1=r["b1"],
                b2=r["b2"],
                weight_decay=r["weight_decay"],
                mask=optim.decay_mask,
            )
        )
      return optax.chain(*parts)

    tx = optax.inject_hyperparams(make)(learning_rate=r["lr"])
    self.state = train.TrainState(
        step=jnp.zeros((), jnp.int32),
        params=variables["params"],
        opt_state=tx.init(variables["params"]),
        kmeans=variables.get("kmeans", {}),
        rng=jax.random.key_data(jax.random.key(spec["seed"] + 1)),
    )

    def step(state, x, lr):
      hp = dict(state.opt_state.hyperparams, learning_rate=lr)
      state = state.replace(opt_state=state.opt_state._replace(hyperparams=hp))
      x = x.astype(jnp.int32)
      batch = {
          "inputs": x[:, :-1],
          "targets": x[:, 1:],
          "weights": jnp.ones(x[:, 1:].shape, jnp.float32),
      }
      return train.train_step(
          state,
          batch,
          model=self.model,
          tx=tx,
          accum_steps=1,
          kmeans_weight=spec["kmeans_weight"],
      )

    self._step = jax.jit(step, donate_argnums=(0,))
    self._logits = jax.jit(lambda v, x: self.model.apply(v, x)[0])

  def params(self):
    return int(sum(a.size for a in self.jax.tree.leaves(self.state.params)))

  def step(self, x, lr):
    self.state, metrics = self._step(
        self.state, x, self.jnp.asarray(lr, self.jnp.float32)
    )
    return float(metrics["loss"])

  def logp_targets(self, windows, chunk=8):
    import numpy as np  # pylint: disable=g-import-not-at-top

    jax, jnp = self.jax, self.jnp
    v = {"params": self.state.params, "kmeans": self.state.kmeans}
    out = []
    for i in range(0, len(windows), chunk):
      x = windows[i : i + chunk]
      pad = chunk - len(x)  # one compiled shape: pad the last chunk
      xp = np.concatenate([x, np.zeros((pad, x.shape[1]), x.dtype)])
      logits = self._logits(v, jnp.asarray(xp[:, :-1], jnp.int32))
      logp = np.asarray(jax.nn.log_softmax(logits.astype(jnp.float32)))
      logp = np.take_along_axis(logp, xp[:, 1:, None].astype(int), -1)
      out.append(logp[: len(x), :, 0].astype(np.float64))
    return np.concatenate(out)

  def causal_logp(self, windows, positions):
    # Exactly causal (tests/causality tests): a position's teacher-forced
    # prediction is the one a forward over its prefix alone makes.
    return self.logp_targets(windows)[:, positions]


def main():
  spec = json.loads(sys.argv[1])
  if spec["side"] == "ours":
    from routing_jax import xla_flags  # pylint: disable=g-import-not-at-top

    xla_flags.apply_cpu_defaults()
    side = Ours()
  else:
    side = Port()
  out = run(spec, side)
  out["versions"] = (
      peer_workers.ours_versions()
      if spec["side"] == "ours"
      else peer_workers.port_versions()
  )
  out["peak_rss_mb"] = peer_workers.rss_mb()
  print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
  main()
