"""Mukhoti et al. 2020 recipe on CIFAR100: ResNet-110, SGD 0.1, momentum 0.9, wd 5e-4, batch
128, 350 epochs with lr ×0.1 at epochs 150 and 250, random crop + flip, 10% of train held out."""

from examples.compare_losses.configs import Config


def get_config() -> Config:
    return Config(
        dataset="cifar100",
        model="resnet110",
        num_epochs=350,
        batch_size=128,
        eval_batch_size=500,
        learning_rate=0.1,
        momentum=0.9,
        weight_decay=5e-4,
        lr_boundaries=(150, 250),
        augment=True,
        checkpoint_every_epochs=10,
    )
