"""The enhancement family's method as the app, API, presets and batch CLI see it."""

from __future__ import annotations

from clipkit.methods.enhance import checkpoints
from clipkit.methods.enhance.enhance import ILLUMINATION_KIND, EnhanceSettings, enhance
from clipkit.registry import ArtifactInput, Control, ImageInput, Method, check_with

TITLE = "Backlit enhancement"
ORDER = 40


def methods() -> list[Method]:
    return [Method(
        name="enhance",
        title="Backlit enhancement",
        description="Brightens back-lit photos with a published CLIP-LIT / RAVE illumination network, full size.",
        settings_cls=EnhanceSettings,
        runner=enhance,
        inputs=(ImageInput("image", "Back-lit photo"),
                # the last run's map, kept in memory: the strength slider redraws from it without the network
                ArtifactInput("illumination", "Illumination map of this photo (from its last run)", ILLUMINATION_KIND,
                              upload=False)),
        controls={
            "checkpoint": Control("Network", "published CLIP-LIT / RAVE weights, or a file path", kind="dropdown",
                                  choices=tuple(checkpoints.PUBLISHED)),
            "strength": Control("Strength", "0 = unchanged, 1 = as trained; moves live after a Run", kind="slider",
                                minimum=0, maximum=2, step=0.05),
            "tile": Control("Tile size (0 = automatic)", kind="number", advanced=True),
        },
        uses_clip=False,
        check=check_with(lambda s: checkpoints.resolve(s.checkpoint)),
        live=("strength",),
        live_reuse=("illumination",),
    )]
