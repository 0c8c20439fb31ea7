"""Blending windows for :class:`~voxelflow.PatchAggregator`, built separably and cached.

A 3-D window is the outer product of three 1-D windows. Every window is
strictly positive (floored at :data:`WINDOW_FLOOR` of its peak), so a voxel
covered by one patch only, at the border of a volume, still gets a positive
total weight and its value comes back unchanged; the aggregator divides by
the summed weights, so any positive window blends a constant into the same
constant.

The 1-D windows are sampled at voxel centres, ``x = 0.5, 1.5, ..., n - 0.5``:

* ``hann``: ``sin²(π x / n)``, symmetric, largest at the centre, not zero at
  the first and last voxel (``torch.hann_window`` is, which is what makes a
  border voxel's weight vanish);
* ``gaussian``: ``exp(-(x - n/2)² / (2σ²))`` with ``σ = n/8``, MONAI's default
  importance map;
* ``average``: ones.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch

from voxelflow._errors import VoxelflowTypeError, VoxelflowValueError, check_choice

WindowName = Literal["average", "hann", "gaussian"]
WINDOW_NAMES: tuple[str, ...] = ("average", "hann", "gaussian")
WINDOW_FLOOR = 1e-3  # smallest weight relative to the peak: positive, and above float16's range
GAUSSIAN_SIGMA_SCALE = 0.125  # σ = n / 8 (MONAI's sigma_scale)

UserWindow = torch.Tensor | Callable[[tuple[int, int, int]], torch.Tensor]


def window_1d(name: str, size: int) -> torch.Tensor:
    """A 1-D window of ``size`` samples in float64, peak 1, floored at :data:`WINDOW_FLOOR`."""
    check_choice("window", name, WINDOW_NAMES)
    if size <= 0:
        raise VoxelflowValueError(f"window size must be positive, got {size}")
    x = torch.arange(size, dtype=torch.float64) + 0.5
    if name == "average":
        values = torch.ones(size, dtype=torch.float64)
    elif name == "hann":
        values = torch.sin(math.pi * x / size) ** 2
    else:
        sigma = GAUSSIAN_SIGMA_SCALE * size
        values = torch.exp(-((x - size / 2) ** 2) / (2 * sigma**2))
    values = values / values.max()
    return values.clamp_min(WINDOW_FLOOR)


@functools.lru_cache(maxsize=32)
def _window_3d_cpu(name: str, size: tuple[int, int, int]) -> torch.Tensor:
    wi, wj, wk = (window_1d(name, n) for n in size)
    window = wi[:, None, None] * wj[None, :, None] * wk[None, None, :]
    return window.clamp_min(WINDOW_FLOOR).to(torch.float32)


def window_3d(
    name: str,
    size: Sequence[int],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The separable 3-D window of ``size`` (cached per name and size).

    Example:
        >>> from voxelflow.patches.windows import window_3d
        >>> w = window_3d("hann", (8, 8, 4))
        >>> tuple(w.shape), bool(w.min() > 0), float(w.max())
        ((8, 8, 4), True, 1.0)
    """
    size3 = tuple(int(n) for n in size)
    window = _window_3d_cpu(name, size3)  # type: ignore[arg-type]
    return window.to(device=device, dtype=dtype)


def user_window(
    window: UserWindow, size: Sequence[int], *, dtype: torch.dtype, device: torch.device | None
) -> torch.Tensor:
    """Validate a user's window (a tensor, or ``window(size) -> tensor``) for patches of ``size``."""
    size3 = tuple(int(n) for n in size)
    value = window(size3) if callable(window) and not isinstance(window, torch.Tensor) else window  # type: ignore[arg-type]
    if not isinstance(value, torch.Tensor):
        raise VoxelflowTypeError(
            f"window must be a torch.Tensor or a callable returning one, got {type(value).__name__}"
        )
    value = value.detach()
    if value.ndim == 4 and value.shape[0] == 1:
        value = value[0]
    if tuple(value.shape) != size3:
        raise VoxelflowValueError(
            f"window has shape {tuple(value.shape)} but the model's output patches are "
            f"{size3}; pass a window of the output patch's spatial shape, or a callable "
            "window(size) -> tensor"
        )
    if not bool(torch.isfinite(value).all()) or bool((value <= 0).any()):
        raise VoxelflowValueError(
            "window must be finite and strictly positive everywhere: a zero weight leaves "
            "voxels that only one patch covers (at the volume's border) without a value; "
            "add a small floor, e.g. window.clamp_min(1e-3)"
        )
    return value.to(device=device, dtype=dtype)
