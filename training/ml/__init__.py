"""Pure PyTorch/timm code; never imports Django."""
