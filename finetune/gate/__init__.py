"""The eval gate: a candidate against its baseline on a snapshot's held-out rows, the verdict's
arithmetic, and the LLM judge it may ask."""
