"""Floor 4: training runs and model versions (the Django side); training/ml/ is pure PyTorch/timm and imports no
Django. Announces model_version_activated (signals.py); never imports inference."""
