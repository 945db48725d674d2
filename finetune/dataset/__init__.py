"""Reviewed feedback as training data: read from the store, built into one of the export
formats (a module each), split by conversation, and recorded as snapshots."""
