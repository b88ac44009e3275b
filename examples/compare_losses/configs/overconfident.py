"""Trains the digits CNN far past 100% training accuracy without weight decay, so the
cross-entropy model's test NLL and ECE grow: the over-confidence Mukhoti et al. study."""

from examples.compare_losses.configs import Config


def get_config() -> Config:
    return Config(
        num_epochs=200,
        weight_decay=0.0,
        lr_boundaries=(100, 150),
        checkpoint_every_epochs=20,
    )
