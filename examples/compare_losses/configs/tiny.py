"""Smoke-test config: two epochs on 256 digits; seconds on a CPU."""

from examples.compare_losses.configs import Config


def get_config() -> Config:
    return Config(
        num_epochs=2,
        batch_size=64,
        eval_batch_size=64,
        lr_boundaries=(1,),
        max_train_examples=256,
        checkpoint_every_epochs=1,
    )
