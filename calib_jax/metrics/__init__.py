"""Calibration metrics (filled in by the metrics module)."""
