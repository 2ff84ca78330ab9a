"""StyleGAN2 generator in plain PyTorch (port-compatible names) and loaders for its published checkpoints."""
