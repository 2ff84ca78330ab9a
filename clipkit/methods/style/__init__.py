"""Text-driven style transfer: CLIPstyler per-prompt networks, a feed-forward text-conditioned stylizer, PODA.

One file per method (``clipstyler``, ``feedforward``, ``poda``), each a Settings dataclass whose fields are a
preset's keys and one entry function; ``entries`` declares them to the registry.
"""
