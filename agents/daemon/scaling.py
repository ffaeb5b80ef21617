"""Coordinate mapping between the native desktop and the display declared to the model.

The Anthropic computer tool works best when the screenshots it sees are at most 1568 px on the
long edge and about 1.15 megapixels in area, so the model is told about a smaller *declared*
display and every coordinate it sends is mapped to the *native* desktop here (and back for
``cursor_position``). The Django server imports this module too, so it must stay pure: no I/O,
no imports beyond the standard library.

Both directions map pixel *centres*: declared pixel ``x`` covers the native interval
``[x * N / D, (x + 1) * N / D)``, whose centre is ``(x + 0.5) * N / D``; the native pixel holding
that centre is ``round((x + 0.5) * N / D - 0.5)``. This avoids the off-by-one at the last pixel
that truncation produced in the original implementation, and makes declared -> native ->
declared a stable round trip whenever the declared display is not larger than the native one.
"""

from __future__ import annotations

import math

MAX_LONG_EDGE = 1568
MAX_PIXELS = 1_150_000

Size = tuple[int, int]


def declared_size(native_width: int, native_height: int) -> Size:
    """Return the display size to declare to the model for a native desktop size.

    scale = min(1, 1568 / long edge, sqrt(1_150_000 / area)); each side is truncated, which
    reproduces the reference table (1920x1080 -> 1429x804, 4000x3000 -> 1238x928).
    Raise ValueError for a non-positive size.
    """
    if native_width <= 0 or native_height <= 0:
        raise ValueError(f"Invalid display size {native_width}x{native_height}.")
    scale = min(
        1.0,
        MAX_LONG_EDGE / max(native_width, native_height),
        math.sqrt(MAX_PIXELS / (native_width * native_height)),
    )
    if scale >= 1.0:
        return native_width, native_height
    return max(1, math.floor(native_width * scale)), max(1, math.floor(native_height * scale))


def _round_half_up(value: float) -> int:
    # Python's round() rounds half to even; pixel maths wants one fixed rule.
    return math.floor(value + 0.5)


def _map_axis(value: int, source: int, target: int) -> int:
    mapped = _round_half_up((value + 0.5) * target / source - 0.5)
    return min(max(mapped, 0), target - 1)


def to_native(x: int, y: int, declared: Size, native: Size) -> tuple[int, int]:
    """Return the native pixel whose area holds the centre of declared pixel (x, y).

    The result is clamped to [0, N-1] on each axis; callers reject coordinates outside the
    declared display before calling (see ``in_bounds``), so clamping only absorbs rounding.
    """
    return _map_axis(x, declared[0], native[0]), _map_axis(y, declared[1], native[1])


def to_declared(x: int, y: int, native: Size, declared: Size) -> tuple[int, int]:
    """Return the declared pixel holding the centre of native pixel (x, y) (clamped)."""
    return _map_axis(x, native[0], declared[0]), _map_axis(y, native[1], declared[1])


def in_bounds(x: int, y: int, size: Size) -> bool:
    """Return True when (x, y) is a pixel of a display of ``size``."""
    return 0 <= x < size[0] and 0 <= y < size[1]


def region_to_native(
    region: tuple[int, int, int, int], declared: Size, native: Size
) -> tuple[int, int, int, int]:
    """Map a declared region (x0, y0, x1, y1) of pixel *edges* to native edges.

    Edges scale linearly (x * N / D); the region is widened outwards to whole native pixels so
    that everything the model asked to see is inside the crop. Return (x0, y0, x1, y1) with
    0 <= x0 < x1 <= N_w and 0 <= y0 < y1 <= N_h.
    """
    x0, y0, x1, y1 = region
    (dw, dh), (nw, nh) = declared, native
    nx0 = min(max(math.floor(x0 * nw / dw), 0), nw - 1)
    ny0 = min(max(math.floor(y0 * nh / dh), 0), nh - 1)
    nx1 = min(max(math.ceil(x1 * nw / dw), nx0 + 1), nw)
    ny1 = min(max(math.ceil(y1 * nh / dh), ny0 + 1), nh)
    return nx0, ny0, nx1, ny1
