"""Post-hoc calibrators (filled in by the calibrators module)."""
