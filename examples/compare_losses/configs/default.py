"""Offline default: a small CNN on scikit-learn's 8×8 digits, the paper's SGD recipe scaled
down (SGD 0.1, momentum 0.9, wd 5e-4, batch 128, ×0.1 at 50% and 75% of training)."""

from examples.compare_losses.configs import Config


def get_config() -> Config:
    return Config()
