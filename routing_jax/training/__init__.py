"""Training: the sharded train step, the loop, optimizer, checkpoints, metrics.

May import `routing_jax.nn` and `routing_jax.data`; neither imports it.
"""
