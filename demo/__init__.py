"""`driftline demo`: the whole loop on a temporary store, from an instrumented app's calls to a
promoted fine-tune, each stage shown as it happens."""
