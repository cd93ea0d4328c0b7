"""Training: long-tail metrics and crash-safe checkpoints (the loop lands with issue 3)."""
