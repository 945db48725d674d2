"""From reviewed feedback to a better model: dataset builders (and later the fine-tune)."""
