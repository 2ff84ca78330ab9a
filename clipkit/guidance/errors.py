"""Errors users can act on: each names the thing that is wrong and, where it can, how to fix it."""


class ClipKitError(Exception):
    """Base class, so the CLI and app can show these as messages instead of tracebacks."""


class WeightsNotFoundError(ClipKitError, FileNotFoundError):
    """A model's weights are not on this machine (no hub is reachable): says which file to supply."""


class CheckpointError(ClipKitError, ValueError):
    """A weights file exists but cannot be read as the expected model (corrupt, truncated, wrong model)."""


class ModelNameError(ClipKitError, ValueError):
    """An unknown model name; the message lists the names that exist."""


class PromptError(ClipKitError, ValueError):
    """An empty or malformed prompt."""


class ImageError(ClipKitError, ValueError):
    """An image of the wrong shape, range, mode or size."""


class ParameterError(ClipKitError, ValueError):
    """A setting outside its sensible range, or an unknown setting."""


class Cancelled(ClipKitError):
    """A run was cancelled by the user; the partial result travels with it."""

    def __init__(self, message: str = "cancelled", partial: object = None) -> None:
        super().__init__(message)
        self.partial = partial
