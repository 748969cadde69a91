"""The glyph renderer (oracles on hand-computed pixels) and the glyph task family."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from environments.glyphs import Jitter, jitter_segments, kanji_strokes, render
from metaplat.tasks import make_family
from metaplat.tasks.base import SPLITS
from metaplat.tasks.glyphs import GlyphFamily

# -- renderer ------------------------------------------------------------------------------


def test_render_matches_hand_computed_coverage() -> None:
    # Canvas [-1, 1] on 20 px: the segment (-0.5, 0)-(0.5, 0) runs along y = 10 px from
    # x = 5 to x = 15 px. Width 0.15 -> half width 1.5 px; value = clip(1.5 + 0.5 - d, 0, 1).
    img = render(np.array([[[-0.5, 0.0, 0.5, 0.0]]]), size=20, width=0.15)[0]
    assert img[9, 10] == pytest.approx(1.0)  # centre (10.5, 9.5): d = 0.5
    assert img[8, 10] == pytest.approx(0.5)  # d = 1.5
    assert img[7, 10] == 0.0  # d = 2.5
    assert img[9, 16] == pytest.approx(2.0 - np.hypot(1.5, 0.5))  # past the end: d to (15, 10)
    assert img[9, 2] == 0.0 and img[0, 0] == 0.0
    # symmetric about the line y = 10 px
    assert np.allclose(img[:10], img[10:][::-1])


def test_render_shape_dtype_range_and_per_image_width() -> None:
    seg = np.array([[[-0.8, -0.8, 0.8, 0.8], [0.8, -0.8, -0.8, 0.8]]] * 3, dtype=np.float32)
    out = render(seg, size=24, width=np.array([0.05, 0.1, 0.2]))
    assert out.shape == (3, 24, 24) and out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0
    ink = out.sum(axis=(1, 2))
    assert ink[0] < ink[1] < ink[2]
    with pytest.raises(ValueError, match=r"\[n, S, 4\]"):
        render(seg[0], size=24)


def test_jitter_zero_is_the_template_and_quarter_turns_rotate() -> None:
    seg = np.array([[0.2, -0.4, 0.6, 0.1]], dtype=np.float32)
    rng = np.random.default_rng(0)
    still = jitter_segments(seg, rng, 2, Jitter().scaled(0.0), base_scale=0.5)
    assert np.allclose(still, 0.5 * seg[None])
    turned = jitter_segments(seg, rng, 1, Jitter().scaled(0.0), quarter_turns=1)[0, 0]
    assert np.allclose(turned, [0.4, 0.2, -0.1, 0.6])  # (x, y) -> (-y, x)
    full = jitter_segments(seg, rng, 1, Jitter().scaled(0.0), quarter_turns=4)
    assert np.allclose(full[0], seg)
    moved = jitter_segments(seg, rng, 5, Jitter())
    assert moved.shape == (5, 1, 4) and not np.allclose(moved[0], moved[1])


def test_kanji_strokes_cover_the_package_and_are_read_only() -> None:
    strokes = kanji_strokes()
    assert len(strokes) == 6394
    arr = strokes["万"]
    assert arr.shape == (3, 4) and arr.dtype == np.float32
    assert all(np.abs(a).max() <= 1.0 for a in strokes.values())
    with pytest.raises(ValueError):
        arr[0, 0] = 0.0


# -- family --------------------------------------------------------------------------------


def test_split_classes_disjoint_and_cover_the_filtered_pool() -> None:
    fam = GlyphFamily(min_strokes=2, max_strokes=6)
    parts = [set(fam.characters(s)) for s in SPLITS]
    pool = {c for c, s in kanji_strokes().items() if 2 <= len(s) <= 6}
    assert set.union(*parts) == pool
    assert sum(len(p) for p in parts) == len(pool)
    assert [len(p) for p in parts] == [len(pool) - 2 * round(0.15 * len(pool))] + [
        round(0.15 * len(pool))
    ] * 2
    # the partition is fixed by split_seed only
    assert GlyphFamily(min_strokes=2, max_strokes=6).characters("test") == fam.characters("test")
    other = GlyphFamily(min_strokes=2, max_strokes=6, split_seed=1)
    assert other.characters("test") != fam.characters("test")
    d = GlyphFamily(augment_rotations=True).describe()
    assert d["classes"]["train"] == 4 * d["characters"]["train"]
    assert sum(d["characters"].values()) == 6394


def test_sampled_classes_stay_in_their_split() -> None:
    fam = GlyphFamily(augment_rotations=True)
    for split in SPLITS:
        allowed = set(fam.characters(split))
        for spec in fam.sample(np.random.default_rng(0), split, 20):
            assert set(spec.params["classes"]) <= allowed
            assert all(0 <= k < 4 for k in spec.params["quarter_turns"])
            pairs = list(zip(spec.params["classes"], spec.params["quarter_turns"], strict=True))
            assert len(set(pairs)) == fam.num_ways
    plain = GlyphFamily().sample(np.random.default_rng(0), "train", 5)
    assert all(k == 0 for s in plain for k in s.params["quarter_turns"])


def test_episode_shapes_dtypes_range_and_balanced_labels() -> None:
    fam = GlyphFamily(num_ways=4, num_shots=3, num_query=5, image_size=20, augment_rotations=True)
    ep = fam.build(fam.spec(2, "test"))
    assert ep.support_x.shape == (12, 1, 20, 20) and ep.query_x.shape == (20, 1, 20, 20)
    assert ep.support_x.dtype == torch.float32 and ep.support_y.dtype == torch.int64
    assert 0.0 <= float(ep.support_x.min()) and float(ep.query_x.max()) <= 1.0
    assert torch.equal(torch.bincount(ep.support_y), torch.full((4,), 3))
    assert torch.equal(torch.bincount(ep.query_y), torch.full((4,), 5))
    assert (ep.support_x.flatten(1).sum(1) > 3).all()  # every image has ink


def test_instances_differ_but_resemble_their_class() -> None:
    fam = GlyphFamily(num_ways=5, num_shots=6, num_query=1)
    within, between = [], []
    for spec in fam.sample(np.random.default_rng(0), "train", 4):
        ep = fam.build(spec)
        x = ep.support_x.flatten(1)
        x = x - x.mean(1, keepdim=True)
        x = x / x.norm(dim=1, keepdim=True)
        corr = x @ x.T
        same = ep.support_y[:, None] == ep.support_y[None, :]
        off_diag = ~torch.eye(len(x), dtype=torch.bool)
        within.append(corr[same & off_diag].mean())
        between.append(corr[~same].mean())
        assert not torch.equal(ep.support_x[0], ep.support_x[1])  # same class, new instance
    w, b = float(torch.stack(within).mean()), float(torch.stack(between).mean())
    assert w > b + 0.05, (w, b)


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="did you mean 'num_ways'"):
        make_family("glyphs", {"num_way": 5})
    with pytest.raises(ValueError, match="num_shots must be an integer >= 1"):
        GlyphFamily(num_shots=0)
    with pytest.raises(ValueError, match="num_ways=50 exceeds"):
        GlyphFamily(num_ways=50, min_strokes=1, max_strokes=2)
    with pytest.raises(ValueError, match="min_strokes and max_strokes"):
        GlyphFamily(min_strokes=9, max_strokes=3)
    with pytest.raises(ValueError, match="split_fractions"):
        GlyphFamily(split_fractions=(0.5, 0.5))  # type: ignore[arg-type]
