"""Online evaluation: graders (an LLM judge, cheap built-in checks) score a sample of new calls,
stored as feedback from the `judge` source."""
