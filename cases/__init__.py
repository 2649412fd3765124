"""Floor 6: case summaries (differential counts by final label and by the model, blast fraction, the 20 % flag)."""
