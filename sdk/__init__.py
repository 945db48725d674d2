"""What apps import: the driftline SDK (OpenTelemetry only)."""
