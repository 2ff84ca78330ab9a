"""What prompts mean, checked by a model that did not guide.

The world guide steers; the world judge (another seed, another image tower) and plain pixel statistics
score the result. A wrong sign, normalisation or preprocessing in the guidance core fails these even
when "the loss goes down" would still pass.
"""

from __future__ import annotations

import pytest
import torch

from clipkit.guidance import losses
from clipkit.guidance.clip import load_clip
from clipkit.methods.diffusion.clip_guided_diffusion import clip_guided_diffusion
from clipkit.methods.diffusion.img2img import img2img
from clipkit.methods.image.edit import edit
from clipkit.methods.image.generate import generate
from clipkit.methods.image.pyramid import PyramidImage
from clipkit.world.scene import (
    COLOURS,
    ONE_OBJECT_CAPTIONS,
    ObjectSpec,
    SceneSpec,
    nearest_colour,
    render,
    render_batch,
    sample_scene,
)


@pytest.fixture(scope="module")
def guide():
    return load_clip("world-guide", device="cpu")


@pytest.fixture(scope="module")
def judge():
    return load_clip("world-judge", device="cpu")


def red_circle(size: int = 64, background: str = "white", lighting: str = "bright") -> torch.Tensor:
    scene = SceneSpec(objects=(ObjectSpec("circle", "red", "large", "centre"),), background="plain",
                      bg_colour=background, lighting=lighting)
    return render(scene, size)[None]


ONE_OBJECT = list(ONE_OBJECT_CAPTIONS)


def judged(clip, images: torch.Tensor) -> str:
    """The one-object caption the judge ranks first."""
    return ONE_OBJECT[int(clip.caption_probabilities(images, ONE_OBJECT)[0].argmax())]


def foreground(image: torch.Tensor, frac: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask, mean colour) of the pixels farthest from the image's median colour (the background)."""
    flat = image[0].reshape(3, -1)
    dist = (flat - flat.median(dim=1).values[:, None]).norm(dim=0)
    mask = dist >= dist.quantile(1 - frac)
    return mask.view(image.shape[-2:]), flat[:, mask].mean(1)


def centroid(mask: torch.Tensor) -> torch.Tensor:
    ys, xs = mask.nonzero(as_tuple=True)
    return torch.stack([xs.float().mean(), ys.float().mean()])


def dominant_colour(image: torch.Tensor, frac: float = 0.15) -> str:
    """The named colour most of the image's most saturated pixels are nearest to (its figure's colour)."""
    flat = image.reshape(3, -1)
    saturation = flat.amax(0) - flat.amin(0)
    picked = flat[:, saturation >= saturation.quantile(1 - frac)].T
    names = [nearest_colour(tuple(px.tolist())) for px in picked]
    return max(set(names), key=names.count)


def test_judge_reads_rendered_scenes(judge):
    """Sanity of the test bed itself: the judge names a rendered red circle correctly."""
    p = judge.caption_probabilities(red_circle(), ONE_OBJECT)
    assert ONE_OBJECT[int(p.argmax())] == "a red circle"


def test_masked_edit_leaves_the_other_half_unchanged(guide):
    src = red_circle()
    mask = torch.zeros(64, 64)
    mask[:, :32] = 1
    r = edit(src, mask=mask, clip=guide, source_text="a red circle", target_text="a blue circle", steps=6,
             cutouts=8, lr=0.1, seed=0, progress=False)
    assert torch.equal(r.images[..., 32:], src[..., 32:])
    assert (r.images[..., :32] - src[..., :32]).abs().max() > 0.05


def lit_sets(n: int = 24):
    """The same scenes rendered bright and backlit."""
    g = torch.Generator().manual_seed(0)
    scenes = [sample_scene(g) for _ in range(n)]
    from dataclasses import replace

    bright = render_batch([replace(s, lighting="bright") for s in scenes], 64)
    backlit = render_batch([replace(s, lighting="backlit") for s in scenes], 64)
    return bright, backlit


def test_residual_vector_points_from_backlit_to_bright(guide, judge):
    bright, backlit = lit_sets()
    for clip in (guide, judge):
        with torch.inference_mode():
            r = losses.residual_vector(clip.encode_image(backlit), clip.encode_image(bright))
            t_bright, t_dark = clip.encode_text(["a bright photo", "a dark photo"])
        assert float(r @ t_bright) > float(r @ t_dark), clip.name


def test_prompt_pair_scores_bright_above_backlit(guide):
    bright, backlit = lit_sets()
    with torch.inference_mode():
        pos, neg = guide.encode_text(["a bright photo", "a backlit photo"])
        on_bright = losses.prompt_pair_loss(guide.encode_image(bright), pos, neg)
        on_backlit = losses.prompt_pair_loss(guide.encode_image(backlit), pos, neg)
    assert on_bright < on_backlit


def test_negative_prompt_lowers_red(guide, judge):
    src = red_circle()
    r = edit(src, clip=guide, prompt="red:-1", steps=60, seed=0, content_weight=0.5, progress=False)
    colours = [f"a {c} circle" for c in COLOURS]
    red = list(COLOURS).index("red")
    before = judge.caption_probabilities(src, colours)[0, red]
    after = judge.caption_probabilities(r.images, colours)[0, red]
    assert after < before - 0.05, (float(before), float(after))


def test_directional_edit_moves_red_toward_blue(guide, judge):
    src = red_circle()
    r = edit(src, clip=guide, source_text="a red circle", target_text="a blue circle", steps=80, seed=0,
             content_weight=0.5, progress=False)
    colours = [f"a {c} circle" for c in COLOURS]
    names = list(COLOURS)
    before, after = judge.caption_probabilities(src, colours)[0], judge.caption_probabilities(r.images, colours)[0]
    assert after[names.index("red")] < 0.05 < before[names.index("red")]
    assert after[names.index("blue")] > 10 * before[names.index("blue")]
    assert names[int(after.argmax())] in ("blue", "purple", "cyan"), names[int(after.argmax())]


def test_text_to_image_from_noise_paints_what_the_judge_calls_red(guide, judge):
    """Four images from noise for the plain prompt "a red circle" with the generate defaults (one run, seed 0).
    Pixel optimisation carries the colour over to a CLIP that did not guide, not the shape: the guide paints a
    red field, flat on top and pointed below (its super-stimulus for "circle", see the guide's card), which the
    judge calls "a red cross". Measured: the judge's probability of a red object (the sum over "a red <shape>")
    is 0.99 or more for all 4 and every figure is red; the noise they start from is no red object to it. Shape
    from text is tested on the diffusion method below, whose prior keeps the picture a world scene."""
    r = generate(clip=guide, prompt="a red circle", batch=4, seed=0, progress=False)
    start = PyramidImage(64, 4, generator=torch.Generator().manual_seed(0), decay=0.3)().detach()
    reds = [i for i, caption in enumerate(ONE_OBJECT) if caption.startswith("a red ")]
    before = judge.caption_probabilities(start, ONE_OBJECT)[:, reds].sum(1)
    after = judge.caption_probabilities(r.images, ONE_OBJECT)[:, reds].sum(1)
    assert before.max() < 0.01, before
    assert after.min() > 0.9, after
    assert [dominant_colour(img) for img in r.images] == ["red"] * 4


def red_hued(images: torch.Tensor) -> torch.Tensor:
    """(B, H, W) mask of saturated pixels of red hue, dark or light (a dark red disc is still red; its nearest
    named colour can be brown)."""
    import kornia

    h, sat, val = kornia.color.rgb_to_hsv(images).unbind(1)
    degrees = torch.rad2deg(h)
    return ((degrees < 15) | (degrees > 345)) & (sat > 0.5) & (val > 0.2)


def saturated(images: torch.Tensor, frac: float = 0.15) -> torch.Tensor:
    """(B, H, W) mask of each image's most saturated pixels: its figure, on the world's greyish grounds."""
    spread = images.amax(1) - images.amin(1)
    return spread >= spread.flatten(1).quantile(1 - frac, dim=1).view(-1, 1, 1)


def red_circles(probabilities: torch.Tensor, images: torch.Tensor, k: int) -> torch.Tensor:
    """(B,) bool: the judge ranks caption k first, the figure is mostly red in hue, red covers 2-30 % of the frame."""
    red, figure = red_hued(images), saturated(images)
    red_figure = (red & figure).flatten(1).sum(1) / figure.flatten(1).sum(1)
    share = red.float().mean((1, 2))
    return (probabilities.argmax(1) == k) & (red_figure > 0.5) & (share > 0.02) & (share < 0.3)


def assert_red_objects_the_judge_calls_red_circles(judge, images: torch.Tensor, baseline: torch.Tensor,
                                                   at_least: int) -> None:
    """At least `at_least` images are red circles by three tests at once: the judge ranks "a red circle" first,
    the figure (the most saturated pixels) is mostly red in hue, and red covers 2 to 30 % of the frame (one
    object on a ground, not a red field); the same seed without text or guidance is some other scene: none of its
    images passes the three tests and the judge's mean probability of "a red circle" for them is below 0.05 (one
    of them may be an orange circle, to which the judge rightly gives some of that probability)."""
    k = ONE_OBJECT.index("a red circle")
    before, after = judge.caption_probabilities(baseline, ONE_OBJECT), judge.caption_probabilities(images, ONE_OBJECT)
    assert before[:, k].mean() < 0.05, before[:, k]
    assert int(red_circles(before, baseline, k).sum()) == 0, before[:, k]
    good = red_circles(after, images, k)
    assert int(good.sum()) >= at_least, (after.argmax(1), after[:, k])


@pytest.fixture(scope="module")
def unconditioned_samples():
    """The world diffusion model's own samples at seed 0: no CLIP guidance and no text."""
    return clip_guided_diffusion(guidance_scale=0.0, recurrence=1, cfg_scale=0.0, batch=8, seed=0,
                                 progress=False).images


def test_diffusion_draws_a_red_object_on_a_background_the_judge_calls_a_red_circle(guide, judge,
                                                                                    unconditioned_samples):
    """The default run, twice over: sixteen samples (seeds 0 to 15) of the text-conditioned world latent diffusion
    model toward "a red circle" (classifier-free guidance 3 on the guide's text embedding, plus the guide's
    gradient; the method's defaults). Unlike the pixel method's red field, each hit is one red object on a world
    background, so red fills a small share of the frame. Measured at one thread: 13 of 16 pass all three tests
    (5 of seeds 0-7, 8 of seeds 8-15); over 32 samples the judge ranks 29 first (bench/default_run.py)."""
    r = clip_guided_diffusion(clip=guide, prompt="a red circle", batch=16, seed=0, progress=False)
    assert r.settings["text_conditioned"]
    assert_red_objects_the_judge_calls_red_circles(judge, r.images, unconditioned_samples, at_least=10)


def test_text_conditioned_diffusion_alone_draws_red_circles(judge, unconditioned_samples):
    """Classifier-free guidance only (scale 6, no guiding CLIP gradient: 0.8 s for 16 images): the prior itself
    draws what the caption says. Measured on seeds 0 to 15: the judge ranks 10 of 16 first (17 of 32 over seeds 0
    to 31), 6 of 16 pass all three tests (the others have a red ground or a figure of another colour); 0 of the
    unconditioned samples do. CLIP guidance (the default run above) does better."""
    r = clip_guided_diffusion(prompt="a red circle", guidance_scale=0.0, recurrence=1, cfg_scale=6.0, batch=16,
                              seed=0, progress=False)
    assert r.settings["clip"] is None and r.settings["text_conditioned"]
    assert_red_objects_the_judge_calls_red_circles(judge, r.images, unconditioned_samples, at_least=4)


def test_directional_edit_changes_colour_and_keeps_shape_and_place(guide, judge):
    src = red_circle()
    # whole-image views under strong noise: the edit has to hold for every view, so it recolours the object
    # instead of adding "blue" evidence around it (with half-size cutouts the judge reads the halo as a cross)
    r = edit(src, clip=guide, source_text="a red circle", target_text="a blue circle", steps=100, seed=0,
             content_weight=0.2, min_frac=1.0, noise=0.3, progress=False)
    assert judged(judge, src) == "a red circle"
    assert judged(judge, r.images) == "a blue circle", judge.caption_probabilities(r.images, ONE_OBJECT).topk(3)
    before, _ = foreground(src)
    after, colour = foreground(r.images)
    assert (centroid(after) - centroid(before)).norm() < 2.0  # pixels
    assert (before & after).sum() / (before | after).sum() > 0.7  # the same silhouette
    assert nearest_colour(tuple(colour.tolist())) in ("blue", "purple"), colour


def test_img2img_redraws_a_red_circle_blue_in_place(guide, judge):
    """img2img at its defaults (SDEdit at strength 0.8 on the world model, CLIP-guided), eight takes: the judge
    calls most of them a blue circle, their figures are blue in pixels and stay where the red circle was; the
    text-conditioned model alone (no CLIP guidance) gets fewer of them read as a blue circle."""
    src = red_circle()
    r = img2img(src, clip=guide, prompt="a blue circle", batch=8, seed=0, progress=False)
    plain = img2img(src, clip=guide, prompt="a blue circle", guidance_scale=0.0, batch=8, seed=0, progress=False)
    called = [judged(judge, im[None]) for im in r.images]
    called_plain = [judged(judge, im[None]) for im in plain.images]
    blue = [dominant_colour(im) for im in r.images]
    before, _ = foreground(src)
    moved = [float((centroid(foreground(im[None])[0]) - centroid(before)).norm()) for im in r.images]
    assert called.count("a blue circle") >= 5, called
    assert called.count("a blue circle") > called_plain.count("a blue circle"), (called, called_plain)
    assert sum(c in ("blue", "purple", "cyan") for c in blue) >= 6, blue
    assert sum(d < 3.0 for d in moved) >= 6, moved  # pixels
