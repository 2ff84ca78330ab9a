"""The scoreboard's task lists: fixed, seeded and versioned, so two boards are comparable only when they ran the
same tasks (``TASKS_VERSION`` is written beside every result).

Every task comes from the procedural world (``clipkit.world.scene``): text-to-image prompts are one-object captions
(held-out (shape, colour) pairs included), edits and stylisations start from rendered one-object scenes, and the
backlit scenes for enhancement are rendered with the world's "backlit" lighting. The judge ranks each result among
the world captions that differ in the attribute the task changes; for image tasks those captions name every other
attribute of the scene truly (``describe``), the way the judge's card measures its accuracy.

Change nothing here after seeing results: a changed list is a new ``TASKS_VERSION``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F

from clipkit.world.scene import (
    BACKGROUNDS,
    COLOURS,
    HELDOUT,
    LIGHTINGS,
    ONE_OBJECT_CAPTIONS,
    POSITIONS,
    SHAPES,
    SIZES,
    SceneSpec,
    describe,
    render_batch,
    sample_scene,
)

TASKS_VERSION = 1
TASKS_SEED = 2029  # fixed with the version: the task lists never depend on the board's --seed
TASKS_PER_ROW = 20
QUICK_TASKS = 2  # --quick runs the first tasks of each row (4 per method with two rows): a few minutes
IMAGE_SIZE = 64  # the world's and the judges' size: inputs are rendered at it

# The prompts the shipped feed-forward stylizer was trained on (clipkit/methods/style/world_prompts.txt, copied so
# the task list cannot change when that file does; a test checks they are still there)
STYLE_PROMPTS: tuple[str, ...] = (
    "a dark photo", "a bright photo", "a backlit photo", "a photo on a striped background",
    "a photo on a dotted background", "a photo on a checker background", "a photo on a red background",
    "a photo on a blue background",
)
# what each style prompt asks of the scene: (attribute, value)
_STYLE_TARGET: dict[str, tuple[str, str]] = {
    "a dark photo": ("lighting", "dark"), "a bright photo": ("lighting", "bright"),
    "a backlit photo": ("lighting", "backlit"), "a photo on a striped background": ("background", "stripes"),
    "a photo on a dotted background": ("background", "dots"),
    "a photo on a checker background": ("background", "checker"),
    "a photo on a red background": ("bg_colour", "red"), "a photo on a blue background": ("bg_colour", "blue"),
}
# the values the judge chooses among, per attribute
VALUES: dict[str, tuple[str, ...]] = {
    "colour": tuple(COLOURS), "shape": SHAPES, "size": SIZES, "position": POSITIONS, "background": BACKGROUNDS,
    "bg_colour": tuple(COLOURS), "lighting": LIGHTINGS,
}
OBJECT_ATTRIBUTES = ("colour", "shape", "size", "position")
SCENE_ATTRIBUTES = ("colour", "shape", "size", "position", "background", "lighting")
_BG_WORD = {"plain": "plain", "gradient": "gradient", "stripes": "striped", "dots": "dotted", "checker": "checkered"}


@dataclass(frozen=True)
class Row:
    """One line of the board: a registered method with the settings that make this row (not a speed-up)."""

    name: str
    method: str
    kind: str  # "text-to-image", "edit", "style", "enhance"
    settings: dict[str, Any] = field(default_factory=dict, hash=False)
    mode: str = ""  # edits: "prompt" or "direction"
    note: str = ""
    then: str = ""  # a trainer's row: the method that applies what it trained (its artifacts go in as inputs)


ROWS: dict[str, Row] = {r.name: r for r in (
    Row("generate", "generate", "text-to-image", note="pixel pyramid optimised toward the prompt"),
    Row("diffusion", "diffusion", "text-to-image", {"batch": 1},
        note="text-conditioned world-ldm with CLIP guidance (defaults); one sample per task"),
    Row("diffusion-noclip", "diffusion", "text-to-image", {"batch": 1, "guidance_scale": 0.0},
        note="the same without CLIP guidance (guidance_scale 0, classifier-free guidance kept)"),
    Row("edit-prompt", "edit", "edit", mode="prompt", note="prompt = the target caption"),
    Row("edit-direction", "edit", "edit", mode="direction", note="source_text -> target_text"),
    Row("img2img", "img2img", "edit", mode="prompt",
        note="SDEdit on world-ldm with CLIP guidance (defaults), prompt = the target caption"),
    Row("img2img-noclip", "img2img", "edit", {"guidance_scale": 0.0}, mode="prompt",
        note="the same without CLIP guidance (the text-conditioned model alone)"),
    Row("clipstyler", "clipstyler", "style", note="CLIPstyler, source 'a photo'"),
    Row("stylize", "stylize", "style", note="the shipped feed-forward world stylizer"),
    Row("poda", "poda", "style", note="PODA feature statistics, decoded preview"),
    Row("enhance-clip-lit", "enhance", "enhance", {"checkpoint": "clip-lit"}, note="CLIP-LIT published weights"),
    Row("enhance-rave", "enhance", "enhance", {"checkpoint": "rave-unpaired"}, note="RAVE published weights"),
    # StyleGAN edits: the edit rows' tasks, each input inverted into the world StyleGAN2 first (the start latent)
    Row("styleclip-optimise", "styleclip_optimise", "latent-edit", mode="prompt",
        note="StyleCLIP latent optimisation from the inverted input, prompt = the target caption"),
    Row("styleclip-mapper", "styleclip_mapper_train", "latent-edit", mode="prompt", then="styleclip_mapper",
        note="a StyleCLIP mapper trained for the task's prompt, then applied to the inverted input"),
    Row("global-directions", "global_directions", "latent-edit", mode="direction",
        note="StyleCLIP global directions, neutral -> target text"),
    Row("stylemc", "stylemc", "latent-edit", mode="prompt", note="a StyleMC direction found for the prompt"),
    Row("nada", "nada", "latent-edit", mode="direction",
        note="StyleGAN-NADA: the generator adapted source -> target text, the inverted latent redrawn by it"),
)}


@dataclass(frozen=True)
class Task:
    """One thing a method is asked to do, and how the result is read.

    ``captions`` are what the judge ranks (``target`` among them; ``source``, for image tasks, is the input's
    caption). ``expect`` are the pixel checks the output must pass; ``keep`` the attributes the judge must still
    read the same (preservation). ``scene`` is the input image's scene, ``target_scene`` the scene asked for."""

    id: str
    kind: str
    attribute: str  # what the task changes ("object" for text to image)
    prompt: str  # the text a prompt-driven method gets
    target: str
    captions: tuple[str, ...]
    source_prompt: str = ""  # directional edits: the text describing the input
    source: str | None = None
    scene: SceneSpec | None = None
    target_scene: SceneSpec | None = None
    expect: tuple[tuple[str, str], ...] = ()
    keep: tuple[str, ...] = ()
    masked: bool = False
    heldout: bool = False

    @property
    def expected(self) -> dict[str, str]:
        return dict(self.expect)


def with_value(scene: SceneSpec, attribute: str, value: str) -> SceneSpec:
    """`scene` with one attribute set (object attributes act on its first object)."""
    if attribute in OBJECT_ATTRIBUTES:
        return replace(scene, objects=(replace(scene.objects[0], **{attribute: value}),) + scene.objects[1:])
    return replace(scene, **{attribute: value})


def value_of(scene: SceneSpec, attribute: str) -> str:
    return getattr(scene.objects[0], attribute) if attribute in OBJECT_ATTRIBUTES else getattr(scene, attribute)


def attribute_captions(scene: SceneSpec, attribute: str) -> tuple[str, ...]:
    """The judge's choices for one attribute of `scene`: its canonical caption once per value (the object's
    colour is never offered as the ground's, nor the ground's as the object's: the world never draws those)."""
    values = VALUES[attribute]
    if attribute == "bg_colour":
        values = tuple(v for v in values if v != scene.objects[0].colour)
    return tuple(describe(with_value(scene, attribute, v)) for v in values)


def short_caption(scene: SceneSpec, attribute: str) -> str:
    """How a person would prompt for `scene` when `attribute` matters: "a blue circle", "a red circle on a
    striped background", "a backlit photo of a red circle"."""
    o = scene.objects[0]
    text = f"{_article(o.colour)} {o.colour} {o.shape}"
    if attribute == "background":
        return f"{text} on a {_BG_WORD[scene.background]} background"
    if attribute == "bg_colour":
        return f"{text} on a {scene.bg_colour} background"
    if attribute == "lighting":
        return f"{_article(scene.lighting)} {scene.lighting} photo of {text}"
    return text


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _pick(g: torch.Generator, seq):
    seq = list(seq)
    return seq[int(torch.randint(len(seq), (1,), generator=g))]


def _one_object(g: torch.Generator, **fixed: str) -> SceneSpec:
    """A random one-object scene (upright jitter only), with some attributes fixed; its ground's colour is never
    the object's."""
    while True:
        s = sample_scene(g, "train", n_objects=1)
        for k, v in fixed.items():
            s = with_value(s, k, v)
        if s.bg_colour != s.objects[0].colour:
            return s


# ---------------------------------------------------------------- text to image

def text_to_image_tasks() -> list[Task]:
    """20 one-object captions: 6 held-out (shape, colour) pairs and 14 seen ones, every shape and colour."""
    g = torch.Generator().manual_seed(TASKS_SEED)
    heldout = sorted(HELDOUT)
    order = torch.randperm(len(heldout), generator=g).tolist()
    chosen = [f"a {heldout[i][1]} {heldout[i][0]}" for i in order[:6]]
    seen = [c for c in ONE_OBJECT_CAPTIONS if (c.split()[2], c.split()[1]) not in HELDOUT]
    for i in torch.randperm(len(seen), generator=g).tolist():
        if len(chosen) == TASKS_PER_ROW:
            break
        chosen.append(seen[i])
    # interleave held-out and seen ones so a quick board sees both
    chosen = [c for pair in zip(chosen[:6], chosen[6:12]) for c in pair] + chosen[12:]
    tasks = []
    for k, text in enumerate(chosen):
        _, colour, shape = text.split()
        tasks.append(Task(id=f"t2i-{k:02d}", kind="text-to-image", attribute="object", prompt=text, target=text,
                          captions=ONE_OBJECT_CAPTIONS, expect=(("colour", colour), ("shape", shape)),
                          heldout=(shape, colour) in HELDOUT))
    return tasks


# ---------------------------------------------------------------- edits

def _image_task(id_: str, kind: str, attribute: str, source: SceneSpec, target: SceneSpec, expect: dict[str, str],
                masked: bool = False) -> Task:
    keep = tuple(a for a in SCENE_ATTRIBUTES if a != attribute)
    o = target.objects[0]
    return Task(id=id_, kind=kind, attribute=attribute, prompt=short_caption(target, attribute),
                source_prompt=short_caption(source, attribute), target=describe(target),
                captions=attribute_captions(source, attribute), source=describe(source), scene=source,
                target_scene=target, expect=tuple(expect.items()), keep=keep, masked=masked,
                heldout=(o.shape, o.colour) in HELDOUT)


def edit_tasks() -> list[Task]:
    """20 attribute edits of rendered scenes, five rounds of (colour, shape, background, lighting); five are
    masked (the region around the object: pixels outside must not move)."""
    g = torch.Generator().manual_seed(TASKS_SEED + 1)
    lighting_moves = [("bright", "dark"), ("bright", "backlit"), ("dark", "bright"), ("backlit", "bright"),
                      ("bright", "dark")]
    tasks = []
    for r in range(5):
        # colour: a bright scene, recoloured to a colour that is neither its own nor its ground's
        s = _one_object(g, lighting="bright")
        new = _pick(g, [c for c in COLOURS if c not in (s.objects[0].colour, s.bg_colour)])
        t = with_value(s, "colour", new)
        tasks.append(_image_task(f"edit-{len(tasks):02d}", "edit", "colour", s, t,
                                 {"colour": new, "shape": s.objects[0].shape}, masked=r in (0, 2, 4)))
        # shape
        s = _one_object(g, lighting="bright")
        new = _pick(g, [x for x in SHAPES if x != s.objects[0].shape])
        t = with_value(s, "shape", new)
        tasks.append(_image_task(f"edit-{len(tasks):02d}", "edit", "shape", s, t,
                                 {"shape": new, "colour": s.objects[0].colour}, masked=r in (1, 3)))
        # background pattern
        s = _one_object(g, lighting="bright")
        new = _pick(g, [b for b in BACKGROUNDS if b != s.background])
        t = with_value(s, "background", new)
        o = s.objects[0]
        tasks.append(_image_task(f"edit-{len(tasks):02d}", "edit", "background", s, t,
                                 {"colour": o.colour, "shape": o.shape}))
        # lighting: colour is read from pixels only where the result should be bright
        before, after = lighting_moves[r]
        s = _one_object(g, lighting=before)
        t = with_value(s, "lighting", after)
        o = s.objects[0]
        expect = {"shape": o.shape} | ({"colour": o.colour} if after == "bright" else {})
        tasks.append(_image_task(f"edit-{len(tasks):02d}", "edit", "lighting", s, t, expect))
    return tasks


# ---------------------------------------------------------------- style

def style_tasks() -> list[Task]:
    """20 stylisations of rendered scenes toward the world prompts (each prompt 2 or 3 times, on inputs it
    changes); the pixel check asks only that the object keeps its shape (a style may tint everything)."""
    g = torch.Generator().manual_seed(TASKS_SEED + 2)
    tasks = []
    for k in range(TASKS_PER_ROW):
        prompt = STYLE_PROMPTS[k % len(STYLE_PROMPTS)]
        attribute, value = _STYLE_TARGET[prompt]
        while True:
            s = _one_object(g, lighting="bright" if prompt != "a bright photo" else _pick(g, ("dark", "backlit")))
            if value_of(s, attribute) != value and s.objects[0].colour != value:
                break
        t = with_value(s, attribute, value)
        task = _image_task(f"style-{k:02d}", "style", attribute, s, t, {"shape": s.objects[0].shape})
        tasks.append(replace(task, prompt=prompt, source_prompt="a photo"))
    return tasks


# ---------------------------------------------------------------- enhancement

def enhance_tasks() -> list[Task]:
    """20 backlit scenes: the judge should move from "a backlit photo of ..." to "a bright photo of ...", and the
    object should still read, in pixels too, as its own colour and shape."""
    g = torch.Generator().manual_seed(TASKS_SEED + 3)
    tasks = []
    for k in range(TASKS_PER_ROW):
        s = _one_object(g, lighting="backlit")
        t = with_value(s, "lighting", "bright")
        o = s.objects[0]
        task = _image_task(f"enhance-{k:02d}", "enhance", "lighting", s, t, {"colour": o.colour, "shape": o.shape})
        tasks.append(replace(task, prompt="a bright photo", source_prompt="a backlit photo"))
    return tasks


_BY_KIND = {"text-to-image": text_to_image_tasks, "edit": edit_tasks, "latent-edit": edit_tasks,
            "style": style_tasks, "enhance": enhance_tasks}


def tasks_for(row: str | Row, quick: bool = False) -> list[Task]:
    """The fixed task list of a row (its first ``QUICK_TASKS`` with ``quick``)."""
    r = ROWS[row] if isinstance(row, str) else row
    tasks = _BY_KIND[r.kind]()
    return tasks[:QUICK_TASKS] if quick else tasks


def input_image(task: Task) -> torch.Tensor | None:
    """The task's input (1, 3, 64, 64) in [0, 1], rendered by the world renderer; None for text to image."""
    return None if task.scene is None else render_batch([task.scene], IMAGE_SIZE)


def task_mask(task: Task, grow: int = 5) -> torch.Tensor | None:
    """For a masked task, the (1, 1, 64, 64) region an edit may change (1 inside): the object's silhouette in
    the input and in the target, grown by `grow` pixels (a new shape reaches where the old one did not)."""
    if not task.masked or task.scene is None or task.target_scene is None:
        return None
    silhouettes = []
    for scene in (task.scene, task.target_scene):
        o = replace(scene.objects[0], colour="white", shade=(0.0, 0.0, 0.0), rgb=None)
        on = render_batch([SceneSpec((o,), "plain", "black", "bright")], IMAGE_SIZE)
        off = render_batch([SceneSpec((), "plain", "black", "bright")], IMAGE_SIZE)
        silhouettes.append((on - off).abs().amax(1, keepdim=True) > 0.05)
    region = (silhouettes[0] | silhouettes[1]).float()
    return (F.max_pool2d(region, 2 * grow + 1, stride=1, padding=grow) > 0.5).float()
