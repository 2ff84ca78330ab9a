"""Text-to-image by optimising an image parameterisation directly against a CLIP guide."""
