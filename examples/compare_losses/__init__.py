"""Reproduces the loss comparison of Mukhoti et al. 2020 ("Calibrating Deep Neural Networks
using Focal Loss"): ``python -m examples.compare_losses``."""
