"""Alert rules over detector results and call metrics, notification policy, the outbox and the
retraining trigger."""
