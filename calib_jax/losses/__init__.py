"""Calibration-aware training losses (filled in by the losses module)."""
