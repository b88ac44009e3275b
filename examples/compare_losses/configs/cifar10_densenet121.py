"""Mukhoti et al. 2020 recipe (see ``paper_cifar_config``) for DenseNet-121 on CIFAR-10."""

from examples.compare_losses.configs import Config, paper_cifar_config


def get_config() -> Config:
    return paper_cifar_config("cifar10", "densenet121")
