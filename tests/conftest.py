"""Test-session configuration.

Eight virtual CPU devices are requested before JAX is imported so that sharding tests
(``shard_map`` + ``psum``) can run in-process; single-device tests are unaffected (they run on
device 0). Rank promotion is an error so silent broadcasting bugs fail loudly.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")
