"""Draw an IIDFile so a person can look at it: every (or selected) segment in
its own colour, half transparent, with a solid outline, over the photo when
one is given (else over a dark background the size of the image)."""

from __future__ import annotations

import colorsys
import os
from typing import Any, Iterable

import numpy as np

from ..iidfile import IIDFile
from ..masks import check_pixels
from . import _common as c

__all__ = ["colour", "render", "render_file"]

BACKGROUND = (24, 24, 28)
_GOLDEN = 0.618033988749895


def colour(i: int) -> tuple[int, int, int]:
    """A bright colour for index ``i``; neighbours differ by the golden angle."""
    h = (0.13 + i * _GOLDEN) % 1.0
    s = 0.85 if i % 2 == 0 else 0.65
    v = 1.0 if i % 3 != 2 else 0.8
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return int(r * 255), int(g * 255), int(b * 255)


def _outline(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    if not mask.any():
        return mask
    inner = ndimage.binary_erosion(mask, structure=np.ones((3, 3), bool), border_value=0)
    return mask & ~inner


def render(
    f: IIDFile,
    image: Any = None,
    groups: Iterable[str] | None = None,
    keys: Iterable[int] | None = None,
    alpha: float = 0.45,
    outline: bool = True,
) -> np.ndarray:
    """An RGB ``uint8`` array (height, width, 3) of ``f``'s segments.

    :param image: the photo (a path, a PIL image or an array); the drawing
        takes its size, and segments beyond it are clipped.  Without it the
        size comes from the metadata / bboxes (see ``canvas_shape``).
    :param groups, keys: draw only these entries (both given: their union).
    :param alpha: fill opacity 0..1 (the outline is opaque).
    """
    if groups is not None or keys is not None:
        entries = f.fetch(keys=list(keys) if keys is not None else None, groups=list(groups) if groups is not None else None)
    else:
        entries = f.fetch(everything=True)
    if image is not None:
        from PIL import Image

        if isinstance(image, (str, os.PathLike)):
            with Image.open(image) as img:
                base = np.asarray(img.convert("RGB"), dtype=np.float32)
        elif isinstance(image, np.ndarray):
            arr = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
            base = arr[..., :3].astype(np.float32)
        else:
            base = np.asarray(image.convert("RGB"), dtype=np.float32)
    else:
        h, w = c.canvas_shape(f)
        check_pixels(max(h, 1), max(w, 1), "rendering")
        base = np.empty((max(h, 1), max(w, 1), 3), dtype=np.float32)
        base[...] = BACKGROUND
    height, width = base.shape[:2]
    for e in entries:
        minr, minc, maxr, maxc = e.seg.bbox
        r1, c1 = min(maxr, height), min(maxc, width)
        if r1 <= minr or c1 <= minc:
            continue
        mask = e.seg.mask()[: r1 - minr, : c1 - minc]
        col = np.array(colour(e.key), dtype=np.float32)
        view = base[minr:r1, minc:c1]
        view[mask] = view[mask] * (1 - alpha) + col * alpha
        if outline:
            view[_outline(mask)] = col
    return np.clip(base + 0.5, 0, 255).astype(np.uint8)


def render_file(
    src: Any, out: str, image: Any = None, groups: Iterable[str] | None = None, keys: Iterable[int] | None = None, **kwargs: Any
) -> tuple[int, int]:
    """Render ``src`` (an IIDFile or a path any reader reads) to the PNG
    ``out``; returns the (height, width) drawn."""
    from PIL import Image

    f = src
    if not isinstance(src, IIDFile):
        from .registry import read

        f = read(src)
        if isinstance(f, list):
            if len(f) != 1:
                raise ValueError(f"{src!r} holds {len(f)} images; read it and pass one IIDFile")
            f = f[0]
    rgb = render(f, image=image, groups=groups, keys=keys, **kwargs)
    import io

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    c.write_bytes(out, buf.getvalue())
    return rgb.shape[0], rgb.shape[1]
