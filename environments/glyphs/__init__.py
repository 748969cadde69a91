"""Procedural handwriting: stroke glyphs rendered as jittered, anti-aliased grayscale images.

Knows nothing about meta-learning. :func:`kanji_strokes` gives the stroke data (6,394 kanji as
line segments, from the ``kanjidraw`` package, CC-BY-SA-3.0 data from KanjiVG);
:func:`jitter_segments` draws per-instance variations ("different writers");
:func:`render` rasterises segments. Coordinates are canvas units: the canvas is [-1, 1]²,
x to the right, y downwards.
"""

from environments.glyphs.render import Jitter, jitter_segments, render
from environments.glyphs.strokes import kanji_strokes

__all__ = ["Jitter", "jitter_segments", "kanji_strokes", "render"]
