"""Test-session configuration.

Eight virtual CPU devices are requested before JAX initialises a backend
(:func:`chex.set_n_cpu_devices`, which keeps any other ``XLA_FLAGS``) so that sharding tests
(``shard_map`` + ``psum``) can run in-process; single-device tests are unaffected (they run on
device 0). Rank promotion is an error so silent broadcasting bugs fail loudly.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import chex
import jax

chex.set_n_cpu_devices(8)
jax.config.update("jax_numpy_rank_promotion", "raise")
