"""Annotation REST API: images and imports (images.py); labeling, consensus and agreement (labeling.py); the
output shapes that the pages share with it (serializers.py)."""
