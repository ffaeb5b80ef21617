"""Coordinate mapping between declared and native displays (pure functions)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.daemon.scaling import declared_size, in_bounds, region_to_native, to_declared, to_native

GEOMETRIES = [(1280, 800), (1920, 1080), (1366, 768), (1279, 799), (3001, 2001), (4000, 3000), (800, 600)]


@pytest.mark.parametrize(
    ("native", "declared"),
    [
        ((1920, 1080), (1429, 804)),
        ((4000, 3000), (1238, 928)),
        ((1280, 800), (1280, 800)),  # 1.02 MP, long edge 1280: no scaling
        ((1280, 720), (1280, 720)),
        ((2000, 500), (1568, 392)),  # long-edge limit wins
    ],
)
def test_declared_size_matches_reference_table(native: tuple[int, int], declared: tuple[int, int]) -> None:
    assert declared_size(*native) == declared


def test_declared_size_rejects_empty_display() -> None:
    with pytest.raises(ValueError):
        declared_size(0, 10)


def test_known_points_map_to_pixel_centres() -> None:
    native, declared = (1920, 1080), (1429, 804)
    assert to_native(0, 0, declared, native) == (0, 0)
    assert to_native(1428, 803, declared, native) == (1919, 1079)  # last pixel -> last pixel
    assert to_native(714, 402, declared, native) == (960, 540)  # 714.5 * 1920 / 1429 = 960.0 exactly
    assert to_native(640, 360, (1280, 720), (1920, 1080)) == (960, 540)


geometry = st.sampled_from(GEOMETRIES)


@given(geometry, st.data())
def test_declared_native_declared_round_trip_is_stable(native: tuple[int, int], data: st.DataObject) -> None:
    declared = declared_size(*native)
    x = data.draw(st.integers(0, declared[0] - 1))
    y = data.draw(st.integers(0, declared[1] - 1))
    nx, ny = to_native(x, y, declared, native)
    assert in_bounds(nx, ny, native)
    assert to_declared(nx, ny, native, declared) == (x, y)


@given(geometry, st.data())
def test_native_to_declared_stays_in_bounds_and_is_monotonic(
    native: tuple[int, int], data: st.DataObject
) -> None:
    declared = declared_size(*native)
    x = data.draw(st.integers(0, native[0] - 2))
    y = data.draw(st.integers(0, native[1] - 1))
    dx, dy = to_declared(x, y, native, declared)
    assert in_bounds(dx, dy, declared)
    assert to_declared(x + 1, y, native, declared)[0] >= dx
    # The declared pixel's native centre is within one declared pixel's width of x.
    back_x, _ = to_native(dx, dy, declared, native)
    assert abs(back_x - x) <= native[0] / declared[0] + 1


@given(st.integers(1, 5000), st.integers(1, 5000), st.integers(1, 5000), st.integers(1, 5000), st.data())
def test_to_native_always_clamps_into_the_display(
    nw: int, nh: int, dw: int, dh: int, data: st.DataObject
) -> None:
    x = data.draw(st.integers(0, dw - 1))
    y = data.draw(st.integers(0, dh - 1))
    assert in_bounds(*to_native(x, y, (dw, dh), (nw, nh)), (nw, nh))


@given(geometry, st.data())
def test_region_maps_to_a_non_empty_native_box(native: tuple[int, int], data: st.DataObject) -> None:
    declared = declared_size(*native)
    x0 = data.draw(st.integers(0, declared[0] - 1))
    x1 = data.draw(st.integers(x0 + 1, declared[0]))
    y0 = data.draw(st.integers(0, declared[1] - 1))
    y1 = data.draw(st.integers(y0 + 1, declared[1]))
    nx0, ny0, nx1, ny1 = region_to_native((x0, y0, x1, y1), declared, native)
    assert 0 <= nx0 < nx1 <= native[0] and 0 <= ny0 < ny1 <= native[1]
    # Covers the requested area (edges scale by N/D).
    assert nx0 <= x0 * native[0] / declared[0] and nx1 >= x1 * native[0] / declared[0] - 1e-9
