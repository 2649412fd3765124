"""Annotation REST API: images and imports (images.py); labeling, consensus and agreement (labeling.py)."""
