"""clipkit: one CLIP guidance core steering many image generators and editors (see README.md)."""

__version__ = "0.2.0"
