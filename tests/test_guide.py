"""The guidance core end to end on the tiny CLIP: gradients, masks, determinism, caching, optimisation."""

import pytest
import torch

from clipkit.guidance.augment import Cutouts, PatchCrops
from clipkit.guidance.clip import tiny_clip
from clipkit.guidance.errors import ParameterError
from clipkit.guidance.guide import DirectionalTerm, Guide, PatchDirectionalTerm, PromptTerm, TVTerm
from clipkit.guidance.regions import composite


@pytest.fixture(scope="module")
def clip():
    return tiny_clip(0)


def rand_images(seed, b=1, size=64):
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_gradients_reach_the_image(clip):
    img = rand_images(0).requires_grad_(True)
    guide = Guide(clip, [PromptTerm(prompts="a red circle", view=Cutouts(4))])
    out = guide(img)
    out.loss.backward()
    assert img.grad is not None and img.grad.abs().sum() > 0
    assert set(out.values) == {"prompt", "loss"}


def test_masked_out_pixels_get_zero_gradient(clip):
    img = rand_images(1).requires_grad_(True)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., :, :32] = 1
    guide = Guide(clip, [PromptTerm(prompts="a blue star", view=Cutouts(6)), TVTerm(weight=1.0)], mask=mask)
    guide(img).loss.backward()
    assert img.grad[..., :, 32:].abs().max().item() == 0
    assert img.grad[..., :, :32].abs().sum().item() > 0


def test_composite_keeps_masked_out_pixels_exactly():
    orig, edit = rand_images(2), rand_images(3)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 10:30, 10:30] = 1
    out = composite(edit, orig, mask)
    assert torch.equal(out[..., 40:, :], orig[..., 40:, :])
    assert torch.equal(out[..., 10:30, 10:30], edit[..., 10:30, 10:30])


def test_one_encoder_pass_per_step(clip):
    calls = []
    handle = clip.model.visual.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        cut = Cutouts(5)
        guide = Guide(clip, [
            PromptTerm(prompts="a red circle", view=cut),
            DirectionalTerm(source_text="a photo", target_text="a painting", view=cut, name="dir"),
            PatchDirectionalTerm(source_text="a photo", target_text="a painting",
                                 source_image=rand_images(4), view=PatchCrops(n=3, crop=32)),
        ])
        calls.clear()
        guide(rand_images(5, b=2), source_images=rand_images(6, b=2))
    finally:
        handle.remove()
    # one pass: shared cutouts for images+sources (2*2*5) plus patches for images+sources (2*2*3)
    assert calls == [2 * 2 * 5 + 2 * 2 * 3]


def test_same_seed_same_views_and_loss(clip):
    img = rand_images(7)
    a = Guide(clip, [PromptTerm(prompts="a red circle", view=Cutouts(8))], generator=torch.Generator().manual_seed(3))
    b = Guide(clip, [PromptTerm(prompts="a red circle", view=Cutouts(8))], generator=torch.Generator().manual_seed(3))
    c = Guide(clip, [PromptTerm(prompts="a red circle", view=Cutouts(8))], generator=torch.Generator().manual_seed(4))
    la, lb, lc = a(img).values["loss"], b(img).values["loss"], c(img).values["loss"]
    assert la == lb
    assert la != lc


def test_one_generator_per_image_gives_each_image_its_views_alone(clip):
    """With a generator per image, image i's views (and so its embeddings) are those it gets alone with its own
    generator, whatever else is in the batch; a count that does not match the images is named."""
    imgs = rand_images(8, b=3)
    term = lambda: [PromptTerm(prompts="a red circle", view=Cutouts(4, noise=0.3))]  # noqa: E731
    gens = lambda: [torch.Generator().manual_seed(s) for s in (5, 6, 7)]  # noqa: E731
    together = Guide(clip, term(), generator=gens()).encode_views(imgs, None, None)
    (emb, _), = together.values()
    for i, g in enumerate(gens()):
        (alone, _), = Guide(clip, term(), generator=g).encode_views(imgs[i : i + 1], None, None).values()
        torch.testing.assert_close(emb[i : i + 1], alone, atol=1e-5, rtol=0)
    (shared, _), = Guide(clip, term(), generator=gens()[0]).encode_views(imgs, None, None).values()
    assert (shared[1] - emb[1]).abs().max() > 1e-3  # one generator draws other views for image 1
    with pytest.raises(ParameterError, match="2 generators for 3 images"):
        Guide(clip, term(), generator=gens()[:2])(imgs)


def test_cutouts_stay_inside_region():
    cut = Cutouts(50, min_frac=0.1)
    boxes = cut.boxes(64, 64, torch.Generator().manual_seed(0), region=(10.0, 20.0, 40.0, 60.0))
    assert (boxes[:, 0] >= 10).all() and (boxes[:, 2] <= 40 + 1e-4).all()
    assert (boxes[:, 1] >= 20).all() and (boxes[:, 3] <= 60 + 1e-4).all()
    sides = boxes[:, 2] - boxes[:, 0]
    assert sides.min() >= 6.4 - 1e-4 and sides.max() <= 30 + 1e-4


def test_text_cache_hits(clip):
    clip.encode_text(["a cached prompt"])
    hits, misses = clip.cache_hits, clip.cache_misses
    e1 = clip.encode_text(["a cached prompt", "a cached prompt"])
    assert clip.cache_hits == hits + 2 and clip.cache_misses == misses
    assert torch.equal(e1[0], e1[1])


def test_directional_term_needs_sources(clip):
    guide = Guide(clip, [DirectionalTerm(source_text="a photo", target_text="a sketch")])
    with pytest.raises(ParameterError, match="source_images"):
        guide(rand_images(0))


def test_guide_rejects_duplicate_names_and_absurd_weights(clip):
    with pytest.raises(ParameterError, match="unique"):
        Guide(clip, [TVTerm(), TVTerm()])
    with pytest.raises(ParameterError, match="out of range"):
        Guide(clip, [TVTerm(weight=float("inf"))])


def test_short_optimisation_lowers_the_loss(clip):
    from clipkit.methods.image.generate import generate

    r = generate(clip=clip, prompt="a red circle", steps=25, size=32, cutouts=8, progress=False, lr=0.1)
    first = sum(h["prompt"] for h in r.history[:3]) / 3
    last = sum(h["prompt"] for h in r.history[-3:]) / 3
    assert last < first - 0.01


def test_generate_is_reproducible_from_seed(clip):
    from clipkit.methods.image.generate import generate

    kw = dict(clip=clip, prompt="a green square", steps=3, size=32, cutouts=4, progress=False)
    a, b, c = generate(seed=5, **kw), generate(seed=5, **kw), generate(seed=6, **kw)
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)
    assert a.record()["settings"]["seed"] == 5


def test_each_generated_image_of_a_batch_is_its_seed_alone(clip):
    """Image i of a pixel batch starts from and is viewed through seed + i only: a batch of one with that seed
    draws it again (to float precision: batched convolutions round a little differently)."""
    from clipkit.methods.image.generate import generate

    kw = dict(clip=clip, prompt="a green square", steps=6, size=32, cutouts=4, progress=False)
    batch = generate(seed=5, batch=3, **kw)
    assert batch.record()["settings"]["seeds"] == [5, 6, 7]
    for i in (0, 2):
        alone = generate(seed=5 + i, batch=1, **kw)
        torch.testing.assert_close(alone.images[0], batch.images[i], atol=1e-4, rtol=0)
    assert (batch.images[0] - batch.images[1]).abs().max() > 1e-2


def test_cancel_stops_early_and_keeps_partial(clip):
    from clipkit.guidance.runs import CancelToken
    from clipkit.methods.image.generate import generate

    token = CancelToken()
    seen = []

    def cb(info):
        seen.append(info.step)
        if info.step == 2:
            token.cancel()

    r = generate(clip=clip, prompt="a star", steps=50, size=32, cutouts=2, progress=False, callback=cb, cancel=token)
    assert r.cancelled and len(r.history) == 2 and seen == [1, 2]
    assert r.images.shape == (1, 3, 32, 32)


def test_cutouts_rotate_turns_views_reproducibly():
    top_lit = torch.zeros(1, 3, 32, 32)
    top_lit[..., :12, :] = 1.0  # a bright band along the top edge
    plain = Cutouts(64, min_frac=1.0, noise=0.0, jitter=False)
    turned = Cutouts(64, min_frac=1.0, noise=0.0, jitter=False, rotate=180)
    upright = plain(top_lit, 32, torch.Generator().manual_seed(0))
    views = turned(top_lit, 32, torch.Generator().manual_seed(0))
    assert float(upright[..., 20:, :].amax()) < 0.1  # unturned views never light the bottom
    lit_bottom = views[..., 26:, 12:20].mean(dim=(1, 2, 3)) > 0.5
    assert 0.2 < float(lit_bottom.float().mean()) < 0.8  # some views are turned upside down, others not
    assert torch.equal(views, turned(top_lit, 32, torch.Generator().manual_seed(0)))
    with pytest.raises(ParameterError, match="rotation"):
        Cutouts(8, rotate=270)


def test_a_feathered_mask_fades_in_inside_the_painted_region_only():
    from clipkit.guidance.regions import feather

    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    soft = feather(mask, 4)
    assert torch.equal(soft[mask == 0], torch.zeros_like(soft[mask == 0]))  # outside: still exactly nothing
    assert float(soft[0, 0, 16, 16]) == 1.0  # deep inside: the full edit
    edge = soft[0, 0, 8, 8:24]
    assert 0 <= float(edge.max()) < 0.5 and float(soft[0, 0, 10, 16]) < float(soft[0, 0, 14, 16])  # a ramp in
    assert torch.equal(feather(mask, 0), mask)


def test_feathered_edit_changes_nothing_outside_and_fades_at_the_edge():
    from clipkit.api import run

    picture = torch.full((1, 3, 32, 32), 0.5)
    mask = torch.zeros(32, 32)
    mask[8:24, 8:24] = 1
    out = run("edit", image=picture, mask=mask, clip="tiny", prompt="a red circle", steps=3, cutouts=2,
              feather=6).tensors
    assert torch.equal(out[..., mask == 0], picture[..., mask == 0])
    change = (out - picture).abs().amax(1)[0]
    assert float(change[16, 16]) > float(change[8, 16]) >= 0  # full inside, faded at the stroke's edge


def _per_op_views(cut: Cutouts, images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Cutouts as they were built before the fused path: roi_align crops, kornia's flips and warps, noise."""
    from clipkit.guidance.augment import crop_boxes, jitter

    crops = crop_boxes(images, cut.boxes(images.shape[-2], images.shape[-1], generator), size)
    crops = jitter(crops, generator) if cut.jitter else crops
    if cut.noise > 0:
        sigma = torch.rand(crops.shape[0], 1, 1, 1, generator=generator) * cut.noise
        crops = crops + sigma * torch.randn(crops.shape, generator=generator)
    return crops.clamp(0, 1)


@pytest.mark.parametrize("kwargs, side, size", [
    ({"min_frac": 1.0, "noise": 0.0}, 64, 64),  # whole images at the output size: one sample, no crop
    ({"min_frac": 1.0, "noise": 0.0}, 32, 64),  # whole images, upsampled
    ({"min_frac": 0.25, "noise": 0.0}, 64, 64),  # crops, then jitter
    ({"min_frac": 0.25, "noise": 0.0, "jitter": False}, 64, 64),
    ({"min_frac": 0.5, "noise": 0.3}, 128, 32),  # downsampling crops keep roi_align's area average
])
def test_fused_views_equal_the_per_operation_views_and_their_gradients(kwargs, side, size):
    """The batched grid_sample views draw what roi_align + kornia's jitter drew, in the same order, and sample
    the same points: the same views and the same gradient to the image, to float rounding."""
    cut = Cutouts(12, **kwargs)
    images = rand_images(1, b=3, size=side)
    weights = torch.rand(36, 3, size, size, generator=torch.Generator().manual_seed(2))
    out = []
    for build in (_per_op_views, lambda c, x, s, g: c(x, s, g)):
        x = images.clone().requires_grad_(True)
        views = build(cut, x, size, torch.Generator().manual_seed(5))
        (grad,) = torch.autograd.grad((views * weights).sum(), x)
        out.append((views.detach(), grad))
    (a, ga), (b, gb) = out
    assert a.shape == b.shape == (36, 3, size, size)
    assert (a - b).abs().max() < 1e-4
    if kwargs["noise"] == 0:  # with noise, a view pixel at 0 or 1 may clamp on one side of the rounding only
        assert (ga - gb).abs().max() < 1e-4 * ga.abs().max()


def test_guide_gradient_is_the_loss_gradient_backpropagated_at_scale(clip):
    """GuideOutput.grad backpropagates the loss times 2**40 (out of subnormal floats) and unscales exactly."""
    guide = Guide(clip, [PromptTerm(prompts="a red circle", view=Cutouts(4))],
                  generator=torch.Generator().manual_seed(0))
    x = rand_images(3).requires_grad_(True)
    out = guide(x)
    (plain,) = torch.autograd.grad(out.loss * 2, x, retain_graph=True)
    (scaled,) = out.grad(x, scale=2)
    assert torch.allclose(scaled, plain, rtol=1e-5, atol=1e-12) and plain.abs().max() > 0
