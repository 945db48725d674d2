"""The collector: OTLP ingest, write-ahead log, read API, metrics and the CLI."""
