"""Mukhoti et al. 2020 recipe (see ``paper_cifar_config``) for ResNet-110 on CIFAR-100."""

from examples.compare_losses.configs import Config, paper_cifar_config


def get_config() -> Config:
    return paper_cifar_config("cifar100", "resnet110")
