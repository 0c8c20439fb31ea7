"""Padding of ``(C, I, J, K)`` tensors: the one implementation for patches and transforms.

A mode is ``None`` (no padding wanted), a number (constant padding with that
value), or one of NumPy's names ``"constant"`` (zeros), ``"edge"``,
``"reflect"``, ``"symmetric"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from voxelflow._errors import check_choice

PaddingMode = Literal["constant", "edge", "reflect", "symmetric"]
PADDING_MODES: tuple[str, ...] = ("constant", "edge", "reflect", "symmetric")


def parse_padding_mode(padding_mode: str | float | None) -> str | float | None:
    """``None`` (no padding), a NumPy-style mode name, or a number (constant padding value)."""
    if padding_mode is None or isinstance(padding_mode, int | float):
        return padding_mode
    return check_choice("padding_mode", padding_mode, PADDING_MODES)


def constant_value(mode: str | float | None) -> float | None:
    """The fill value of a constant mode (``None``/``"constant"`` → 0), else ``None``."""
    if mode is None or mode == "constant":
        return 0.0
    if isinstance(mode, int | float):
        return float(mode)
    return None


def pad_tensor(
    tensor: torch.Tensor,
    before: Sequence[int],
    after: Sequence[int],
    mode: str | float | None,
) -> torch.Tensor:
    """``tensor`` ``(C, I, J, K)`` padded by ``before``/``after`` voxels along I, J, K.

    The output is allocated once, the tensor copied into its middle and the
    margins filled by :func:`fill_padding`.

    Example:
        >>> import torch
        >>> from voxelflow._padding import pad_tensor
        >>> pad_tensor(torch.ones(1, 1, 1, 2), (1, 0, 0), (0, 0, 1), 5).flatten().tolist()
        [5.0, 5.0, 5.0, 1.0, 1.0, 5.0]
    """
    before, after = [int(b) for b in before], [int(a) for a in after]
    if not any(before) and not any(after):
        return tensor
    shape = [tensor.shape[0]] + [
        n + b + a for n, b, a in zip(tensor.shape[1:], before, after, strict=True)
    ]
    out = torch.empty(shape, dtype=tensor.dtype, device=tensor.device)
    inner = tuple(slice(b, b + n) for b, n in zip(before, tensor.shape[1:], strict=True))
    out[(slice(None), *inner)] = tensor
    fill_padding(out, inner, mode)
    return out


def fill_padding(buffer: torch.Tensor, inner: Sequence[slice], mode: str | float | None) -> None:
    """Fill ``buffer`` ``(C, I, J, K)`` outside the box ``inner`` (three slices), in place.

    The box already holds the values; everything around it is written once, as
    ``np.pad`` would write it: a constant, or, axis after axis, the edge value,
    a reflection without (``"reflect"``) or with (``"symmetric"``) the border
    voxel, repeated as often as the margin needs.

    Example:
        >>> import torch
        >>> from voxelflow._padding import fill_padding
        >>> row = torch.zeros(1, 1, 1, 6)
        >>> row[..., 2:4] = torch.tensor([1.0, 2.0])
        >>> fill_padding(row, (slice(0, 1), slice(0, 1), slice(2, 4)), "reflect")
        >>> row.flatten().tolist()
        [1.0, 2.0, 1.0, 2.0, 1.0, 2.0]
    """
    spatial = buffer.shape[1:]
    box = [slice(int(s.start), int(s.stop)) for s in inner]
    if all(s.start == 0 and s.stop == n for s, n in zip(box, spatial, strict=True)):
        return
    value = constant_value(mode)
    if value is not None:
        for axis in range(3):  # the slabs before and after the box, axis by axis
            for part in (slice(0, box[axis].start), slice(box[axis].stop, spatial[axis])):
                if part.stop > part.start:
                    region = [slice(None)] * 3
                    region[axis] = part
                    for later in range(axis + 1, 3):
                        region[later] = box[later]
                    buffer[(slice(None), *region)] = value
        return
    check_choice("padding_mode", str(mode), PADDING_MODES)
    current = list(box)
    for axis in range(3):  # np.pad's order: each axis over the already padded earlier ones
        start, stop = current[axis].start, current[axis].stop
        size = spatial[axis]
        if start == 0 and stop == size:
            continue
        positions = torch.arange(size, device=buffer.device) - start
        sources = _mirror(positions, stop - start, str(mode)) + start
        outside = torch.cat([torch.arange(0, start), torch.arange(stop, size)]).to(buffer.device)
        region = [slice(None), *current]
        region[axis + 1] = slice(None)
        view = buffer[tuple(region)]
        view.index_copy_(axis + 1, outside, view.index_select(axis + 1, sources[outside]))
        current[axis] = slice(0, size)


def _mirror(positions: torch.Tensor, n: int, mode: str) -> torch.Tensor:
    """Index in ``[0, n)`` that ``np.pad`` copies to each position (relative to the box)."""
    if mode == "edge" or n == 1:
        return positions.clamp(0, n - 1)
    period = 2 * n if mode == "symmetric" else 2 * n - 2
    folded = positions.remainder(period)
    last = period - 1 if mode == "symmetric" else period
    return torch.where(folded < n, folded, last - folded)
