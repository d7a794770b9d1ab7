# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""routing-jax: the Routing Transformer in JAX/Flax (Roy et al., TACL 2021)."""

import setuptools

setuptools.setup(
    name="routing-jax",
    version="0.1.0",
    description=(
        "Content-based sparse attention (Routing Transformer) for JAX/Flax:"
        " online k-means routing, local attention, sharded training."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["routing_jax", "routing_jax.*"]),
    package_data={
        "routing_jax.data": ["*.xz"],
        "routing_jax.data.datasets": ["checksums.tsv"],
    },
    include_package_data=True,
    # Ranges are the versions tested here (CPU, jax 0.10.2) and on the GPU
    # machines (jax 0.11.2); the sharding APIs move between minor releases.
    install_requires=[
        "jax>=0.10.2,<0.12",
        "flax>=0.12.8,<0.13",
        "optax>=0.2.8,<0.3",
        "orbax-checkpoint>=0.12.8,<0.13",
        "tensorflow-datasets>=4.9.10,<5",
        "array-record>=0.8,<0.9",
        "grain>=0.2.18,<0.3",
        "ml-collections>=1.1,<2",
        "absl-py>=2.1,<3",
        "numpy>=1.26",
        "matplotlib>=3.8",
        "sentencepiece>=0.2",
        # TensorBoard event files without tensorflow.
        "tensorboardX>=2.6,<3",
        # tensorflow-datasets 4.9 imports it to locate builder sources but
        # does not declare it.
        "importlib_resources>=6",
    ],
    extras_require={
        # The TPU compiler without a TPU: `python -m routing_jax.dryrun`
        # compiles for the config's TPU slice (jax[tpu] pins the libtpu
        # that matches the jax installed).
        "tpu": ["jax[tpu]>=0.10.2,<0.12"],
        # With libtpu, so that the TPU-compiler tests run (it adds nothing
        # to the CPU tests' time: JAX_PLATFORMS=cpu keeps it unloaded).
        "test": ["pytest>=8,<10", "pyink>=24.10,<27", "jax[tpu]>=0.10.2,<0.12"],
        # gs:// workdirs: etils.epath reads and writes them through gcsfs.
        "gcs": ["gcsfs"],
    },
)
