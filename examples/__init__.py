"""Examples that use calib_jax end to end (never imported by the library)."""
