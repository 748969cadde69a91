"""Minimal PNG codec (zlib + numpy) so that image folders load without Pillow.

Reads non-interlaced PNGs of every colour type and bit depth into ``uint8`` grayscale
(enough for Omniglot's 1-bit images); writes 8-bit grayscale. Pillow is used instead when
it is installed; this fallback keeps the project free of an imaging dependency.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel


def read_gray(path: str | Path) -> np.ndarray:
    """The image at ``path`` as ``uint8 [H, W]`` grayscale (255 = white)."""
    try:
        from PIL import Image
    except ImportError:
        return _decode(Path(path).read_bytes(), str(path))
    with Image.open(path) as im:
        return np.asarray(im.convert("L"), dtype=np.uint8)


def write_gray(path: str | Path, image: np.ndarray) -> None:
    """Write ``uint8 [H, W]`` as an 8-bit grayscale PNG."""
    img = np.ascontiguousarray(image, dtype=np.uint8)
    if img.ndim != 2:
        raise ValueError(f"image must be [H, W], got shape {img.shape}")
    h, w = img.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), img], axis=1).tobytes()  # filter 0

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    Path(path).write_bytes(
        _SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def _decode(data: bytes, name: str) -> np.ndarray:
    if not data.startswith(_SIGNATURE):
        raise ValueError(f"{name}: not a PNG file")
    pos, idat, palette = 8, [], None
    width = height = depth = ctype = interlace = -1
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"PLTE":
            palette = np.frombuffer(body, np.uint8).reshape(-1, 3)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if ctype not in _CHANNELS or interlace != 0:
        raise ValueError(f"{name}: unsupported PNG (colour type {ctype}, interlace {interlace})")
    channels = _CHANNELS[ctype]
    bpp = max(1, channels * depth // 8)  # bytes per complete pixel, for the filters
    stride = (width * channels * depth + 7) // 8
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8).reshape(height, stride + 1)
    rows = _unfilter(raw, stride, bpp)
    if depth < 8:
        bits = np.unpackbits(rows, axis=1).reshape(height, -1, depth)
        weights = 1 << np.arange(depth - 1, -1, -1)
        samples = (bits * weights).sum(-1)[:, : width * channels]
        if ctype != 3:  # scale gray levels to 0..255
            samples = samples * (255 // ((1 << depth) - 1))
    elif depth == 16:
        samples = rows.reshape(height, -1, 2)[..., 0]
    else:
        samples = rows
    px = samples.reshape(height, width, channels).astype(np.float64)
    if ctype == 3:
        if palette is None:
            raise ValueError(f"{name}: palette image without a PLTE chunk")
        px = palette[px[..., 0].astype(np.intp)].astype(np.float64)
        channels = 3
    if channels in (3, 4):
        gray = px[..., 0] * 0.299 + px[..., 1] * 0.587 + px[..., 2] * 0.114
    else:
        gray = px[..., 0]
    if channels in (2, 4):  # composite onto white
        alpha = px[..., -1] / 255.0
        gray = gray * alpha + 255.0 * (1.0 - alpha)
    return np.clip(np.rint(gray), 0, 255).astype(np.uint8)


def _unfilter(raw: np.ndarray, stride: int, bpp: int) -> np.ndarray:
    out = np.zeros((raw.shape[0], stride), np.uint8)
    prev = np.zeros(stride, np.int32)
    for r in range(raw.shape[0]):
        f, line = int(raw[r, 0]), raw[r, 1:].astype(np.int32)
        if f == 0:
            cur = line
        elif f == 2:
            cur = (line + prev) & 0xFF
        elif f in (1, 3, 4):
            cur = line.copy()
            for i in range(stride):
                left = int(cur[i - bpp]) if i >= bpp else 0
                up, ul = int(prev[i]), (int(prev[i - bpp]) if i >= bpp else 0)
                if f == 1:
                    pred = left
                elif f == 3:
                    pred = (left + up) // 2
                else:
                    p = left + up - ul
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - ul)
                    pred = left if pa <= pb and pa <= pc else (up if pb <= pc else ul)
                cur[i] = (cur[i] + pred) & 0xFF
        else:
            raise ValueError(f"bad PNG filter type {f}")
        out[r] = cur
        prev = cur
    return out
