"""The segment planner equals NumPy slicing: random shapes, boxes, dtypes, byte orders and
seek costs; its segment list covers exactly the region; and it trades seeks for bytes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxelflow.backends.segments import FileLayout, plan

DTYPES = ["<i2", ">i2", "<f4", ">f8", "|u1", "<u4", ">i8", "<c8"]


@st.composite
def cases(draw: st.DrawFn) -> tuple[np.ndarray, int, tuple[slice, ...], float, int | None]:
    ndim = draw(st.integers(3, 5))
    shape = tuple(draw(st.integers(1, 9)) for _ in range(ndim))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    array = np.asfortranarray((rng.normal(size=shape) * 100).astype(dtype))
    offset = draw(st.integers(0, 600))
    box = []
    for n in shape:
        start = draw(st.integers(0, n - 1))
        stop = draw(st.integers(start + 1, n))
        box.append(slice(start, stop, draw(st.integers(1, 3))))
    seek = draw(st.sampled_from([0.0, 16.0, 1024.0, 1e9, math.inf]))
    max_run = draw(st.sampled_from([None, 64, 4096]))
    return array, offset, tuple(box), seek, max_run


def file_bytes(array: np.ndarray, offset: int) -> np.ndarray:
    head = np.random.default_rng(1).integers(0, 256, offset, dtype=np.uint8)  # a "header"
    return np.concatenate([head, np.frombuffer(array.tobytes(order="F"), dtype=np.uint8)])


@settings(max_examples=300, deadline=None)
@given(case=cases(), max_gap=st.sampled_from([0, 8, 100_000]))
def test_gather_equals_numpy(
    case: tuple[np.ndarray, int, tuple[slice, ...], float, int | None], max_gap: int
) -> None:
    array, offset, box, seek, max_run = case
    data = file_bytes(array, offset)
    layout = FileLayout(array.shape, array.dtype, offset)
    segment_plan = plan(layout, box, seek_cost=seek, max_run=max_run)
    fetched: list[tuple[int, int]] = []

    def fetch(ranges: list[tuple[int, int]]) -> list[np.ndarray]:
        fetched.extend(ranges)
        return [data[a:b] for a, b in ranges]

    region = segment_plan.gather(fetch, max_gap=max_gap)
    expected = array[box]
    assert region.dtype == array.dtype and region.shape == expected.shape
    np.testing.assert_array_equal(region, expected)
    # every fetched byte lies in the file's data, and ranges are in order, disjoint
    assert all(offset <= a < b <= len(data) for a, b in fetched)
    assert all(b1 <= a2 for (_, b1), (a2, _) in zip(fetched, fetched[1:], strict=False))
    if math.isinf(seek) and max_run is None:
        assert len(segment_plan.offsets) == 1  # a memory map: one run, whatever the box


@settings(max_examples=200, deadline=None)
@given(case=cases())
def test_segment_list_covers_the_region(
    case: tuple[np.ndarray, int, tuple[slice, ...], float, int | None],
) -> None:
    """Each (offset, length, dest) segment, cut on its own, fills its part of the region."""
    array, offset, box, seek, max_run = case
    data = file_bytes(array, offset)
    segment_plan = plan(FileLayout(array.shape, array.dtype, offset), box, seek_cost=seek)
    region = np.zeros(segment_plan.region_shape, dtype=array.dtype)
    filled = np.zeros(segment_plan.region_shape, dtype=bool)
    for segment in segment_plan.segments():
        assert segment.length == segment_plan.length
        run = data[segment.offset : segment.offset + segment.length]
        region[segment.dest] = segment_plan.cut(run)
        assert not filled[segment.dest].any()  # no voxel written twice
        filled[segment.dest] = True
    assert filled.all()
    np.testing.assert_array_equal(region, array[box])


def test_seek_cost_trades_seeks_for_bytes() -> None:
    layout = FileLayout((100, 80, 60), np.dtype("<f4"), 352)
    box = (slice(10, 20, 1), slice(5, 15, 1), slice(30, 32, 1))  # 10 rows of 10 per k slice
    exact = plan(layout, box, seek_cost=0)
    assert exact.split == 1 and len(exact.offsets) == 20 and exact.length == 40  # bytes only
    rows = plan(layout, box, seek_cost=4096)
    assert rows.split == 2 and len(rows.offsets) == 2  # whole rows of i for each k
    assert rows.length == 100 * 10 * 4
    one = plan(layout, box, seek_cost=math.inf)
    assert len(one.offsets) == 1 and one.offsets[0] == 352 + 30 * 80 * 100 * 4  # whole planes
    bounded = plan(layout, box, seek_cost=math.inf, max_run=1000)
    assert bounded.length <= 1000 and bounded.split == 1


def test_merging_fetches_neighbours_as_one_block() -> None:
    array = np.asfortranarray(np.arange(10 * 4 * 3, dtype="<i2").reshape(10, 4, 3, order="F"))
    data = file_bytes(array, 16)
    segment_plan = plan(
        FileLayout(array.shape, array.dtype, 16),
        (slice(0, 3), slice(0, 4), slice(0, 3)),
        seek_cost=0,
    )
    assert len(segment_plan.offsets) == 12  # one run of 3 values per (j, k)
    fetched: list[tuple[int, int]] = []

    def fetch(ranges: list[tuple[int, int]]) -> list[np.ndarray]:
        fetched.extend(ranges)
        return [data[a:b] for a, b in ranges]

    for max_gap, blocks in [(0, 12), (14, 1)]:  # gaps between runs are 7 values = 14 bytes
        fetched.clear()
        np.testing.assert_array_equal(segment_plan.gather(fetch, max_gap=max_gap), array[:3])
        assert len(fetched) == blocks


@pytest.mark.parametrize("dtype", ["<i2", ">i2"])
def test_byte_order_is_kept_until_the_values_are_stored(dtype: str) -> None:
    array = np.asfortranarray(np.arange(24, dtype=dtype).reshape(2, 3, 4, order="F"))
    region = plan(
        FileLayout(array.shape, array.dtype, 0),
        (slice(0, 2), slice(1, 3), slice(0, 4, 2)),
        seek_cost=0,
    ).gather(lambda ranges: [file_bytes(array, 0)[a:b] for a, b in ranges])
    assert region.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(region, array[:, 1:3, ::2])
