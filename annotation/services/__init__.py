"""Writes for annotation, one module per concern (imports, ...)."""
