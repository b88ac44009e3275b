"""Over-confidence regime: a 320-image training subset that the CNN memorises (training loss
→ 0, test error ≈ 6-7%), 150 epochs, no weight decay. On the full digits set the test error is
≈ 1% and no loss has room to be badly over-confident; here cross-entropy ends with T > 1, the
over-confidence Mukhoti et al. study."""

from examples.compare_losses.configs import Config


def get_config() -> Config:
    return Config(
        max_train_examples=320,
        batch_size=64,
        num_epochs=150,
        weight_decay=0.0,
        lr_boundaries=(75, 110),
        checkpoint_every_epochs=25,
    )
