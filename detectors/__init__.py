"""Drift tests, per-output flags and the scheduler that runs them (DESIGN.md: detectors/)."""
