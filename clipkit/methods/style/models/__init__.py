"""The shipped feed-forward stylizer (card beside it), registered with the weights resolver."""

from pathlib import Path


def register() -> None:
    """The ``clipkit.weights`` entry point for the style family's shipped models."""
    from clipkit.guidance.weights import register_shipped

    register_shipped("stylizer", Path(__file__).resolve().parent)
