"""The on-disk Omniglot loader, on a tiny fake dataset written here (never downloaded)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from metaplat.tasks import make_family
from metaplat.tasks._png import _decode, read_gray, write_gray
from metaplat.tasks.base import SPLITS, TaskSpec
from metaplat.tasks.omniglot import OmniglotFamily

SIZE = 14  # written images are 14x14; the family resizes them to 7x7 in most tests


def _make_dataset(root: Path, drawers: int = 4) -> dict[str, np.ndarray]:
    """9 characters in two alphabets; image ``d`` of a character has ink at row ``i``, col ``d``.

    Returns the ink masks (1 = ink) by character path.
    """
    layout = {
        "images_background/Alpha": ["character01", "character02", "character03", "character04"],
        "images_background/Beta": ["character01"],
        "images_evaluation/Gamma": ["character01", "character02", "character03", "character04"],
    }
    masks = {}
    i = 0
    for alphabet, chars in layout.items():
        for char in chars:
            folder = root / alphabet / char
            folder.mkdir(parents=True)
            for d in range(drawers):
                ink = np.zeros((SIZE, SIZE))
                ink[i, :] = 1.0
                ink[:, d] = 1.0
                masks[f"{alphabet}/{char}/{d}"] = ink
                write_gray(folder / f"{i:04d}_{d + 1:02d}.png", (255 * (1 - ink)).astype(np.uint8))
            i += 1
    return masks


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    return tmp_path, _make_dataset(tmp_path)


@pytest.fixture
def root(dataset: tuple[Path, dict[str, np.ndarray]]) -> Path:
    return dataset[0]


def test_missing_or_empty_root_names_path_and_layout(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=r"nowhere.*images_background/<Alphabet>"):
        OmniglotFamily(root=str(missing))
    (tmp_path / "empty" / "images_background" / "Alpha").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no Omniglot images under .*empty"):
        OmniglotFamily(root=str(tmp_path / "empty"))


def test_registered_and_splits_disjoint_covering_proportional(root: Path) -> None:
    fam = make_family(
        "omniglot", {"root": str(root), "num_ways": 2, "num_shots": 1, "num_query": 3}
    )
    assert isinstance(fam, OmniglotFamily)
    parts = [fam.characters(s) for s in SPLITS]
    # 9 characters in MAML's 1100/100/423 proportions, at least one per split
    assert [len(p) for p in parts] == [6, 1, 2]
    assert len(set().union(*parts)) == 9
    assert all(c.count("/") == 2 for p in parts for c in p)
    assert fam.describe()["characters"] == {"train": 6, "val": 1, "test": 2}
    for split in ("train", "test"):
        for spec in fam.sample(np.random.default_rng(0), split, 10):
            assert set(spec.params["classes"]) <= set(fam.characters(split))


def test_episode_matches_the_pngs(dataset: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, masks = dataset
    fam = OmniglotFamily(root=str(root), num_ways=2, num_shots=2, num_query=2, image_size=SIZE)
    spec = fam.sample(np.random.default_rng(0), "train", 1)[0]
    ep = fam.build(spec)
    assert ep.support_x.shape == (4, 1, SIZE, SIZE) and ep.query_x.shape == (4, 1, SIZE, SIZE)
    assert ep.support_x.dtype == torch.float32 and ep.query_y.dtype == torch.int64
    assert ep.support_y.tolist() == [0, 0, 1, 1] and ep.query_y.tolist() == [0, 0, 1, 1]
    # ink is 1: each image is the written cross, and the drawers of a class are distinct
    for c, (char, idx) in enumerate(
        zip(spec.params["classes"], spec.params["images"], strict=True)
    ):
        assert len(set(idx)) == 4
        images = torch.cat([ep.support_x[2 * c : 2 * c + 2], ep.query_x[2 * c : 2 * c + 2]])
        for img, d in zip(images, idx, strict=True):
            assert np.array_equal(img[0].numpy(), masks[f"{char}/{d}"])
    again = make_family("omniglot", dict(spec.config)).build(TaskSpec.from_json(spec.to_json()))
    assert torch.equal(again.query_x, ep.query_x)


def test_resize_is_area_average_and_rotation_is_a_new_class(root: Path) -> None:
    fam = OmniglotFamily(
        root=str(root), num_ways=2, num_shots=1, num_query=1, image_size=7, augment_rotations=True
    )
    char = fam.characters("train")[0]
    spec = TaskSpec(
        "omniglot",
        fam.config(),
        {"classes": [char, char], "quarter_turns": [0, 1], "images": [[0, 1], [0, 1]]},
        0,
        "train",
    )
    ep = fam.build(spec)
    full = 1.0 - read_gray(next((root / char).iterdir())) / 255.0
    expected = full.reshape(7, 2, 7, 2).mean(axis=(1, 3))
    assert np.allclose(ep.support_x[0, 0].numpy(), expected)
    assert np.allclose(ep.support_x[1, 0].numpy(), np.rot90(expected))
    assert fam.num_classes("train") == 4 * len(fam.characters("train"))


def test_config_errors(root: Path) -> None:
    with pytest.raises(ValueError, match="num_shots \\+ num_query = 5 exceeds the 4 images"):
        OmniglotFamily(root=str(root), num_shots=1, num_query=4)
    fam = OmniglotFamily(root=str(root), num_ways=3, num_query=1)
    fam.sample(np.random.default_rng(0), "train", 2)
    with pytest.raises(ValueError, match="num_ways=3 exceeds the 1 classes of split 'val'"):
        fam.sample(np.random.default_rng(0), "val", 1)
    with pytest.raises(ValueError, match="did you mean 'num_query'"):
        make_family("omniglot", {"root": str(root), "num_querry": 2})


# -- the Pillow-free PNG decoder -----------------------------------------------------------


def _encode(image: np.ndarray, depth: int, filters: list[int]) -> bytes:
    """Reference grayscale PNG encoder with a chosen filter per row (spec section 9)."""
    h, w = image.shape
    if depth < 8:
        bits = ((image[..., None] >> np.arange(depth - 1, -1, -1)) & 1).reshape(h, -1)
        rows = np.packbits(bits.astype(np.uint8), axis=1).astype(int)
    else:
        rows = image.astype(int)
    bpp, out, prev = 1, b"", np.zeros(rows.shape[1], int)
    for r, f in zip(rows, filters, strict=True):
        enc = []
        for i, x in enumerate(r):
            a = int(r[i - bpp]) if i >= bpp else 0
            b, c = int(prev[i]), (int(prev[i - bpp]) if i >= bpp else 0)
            p = a + b - c
            paeth = (
                a
                if abs(p - a) <= abs(p - b) and abs(p - a) <= abs(p - c)
                else (b if abs(p - b) <= abs(p - c) else c)
            )
            pred = [0, a, b, (a + b) // 2, paeth][f]
            enc.append((int(x) - pred) % 256)
        out += bytes([f, *enc])
        prev = r

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", w, h, depth, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(out))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("depth", [1, 8])
def test_png_decoder_all_filters(depth: int) -> None:
    rng = np.random.default_rng(depth)
    img = rng.integers(0, 2**depth, size=(10, 13))
    data = _encode(img, depth, [0, 1, 2, 3, 4, 4, 3, 2, 1, 0])
    expected = img * (255 // (2**depth - 1))
    assert np.array_equal(_decode(data, "x.png"), expected)
    with pytest.raises(ValueError, match="not a PNG"):
        _decode(b"GIF89a", "x.gif")
