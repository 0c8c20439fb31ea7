"""Blend weights for :class:`~voxelflow.PatchAggregator`: separable windows, exact ratios.

A 3-D window is the outer product of three 1-D windows, each strictly
positive and never floored, so the relative weight of two patches at a voxel
is exactly the product of their 1-D windows' ratios, at the faces of a patch
too: where every patch covering a voxel has it near its own border (the
volume's border, the corners of overlaps) the patch that sees the voxel most
centrally still dominates. The aggregator divides by the summed weights, so
any positive window blends a constant into the same constant; the smallest
3-D weights (about 4e-11 of the peak for the Gaussian, ``exp(-8)`` cubed; 1e-15
for a Hann window of 512) are far inside float32's range, where the
aggregator sums the weights (float64 with float64 outputs); user windows are
held to the same bound (:data:`MIN_RELATIVE_WEIGHT`). Sums of ``value ×
weight`` in float16 would underflow at such weights, so float16 and bfloat16
outputs are accumulated as running weighted means instead
(:mod:`voxelflow.patches.accumulators`).

The 1-D windows are sampled at voxel centres, ``x = 0.5, 1.5, ..., n - 0.5``:

* ``hann``: ``sin²(π x / n)``, symmetric, largest at the centre, positive at
  the first and last voxel (``torch.hann_window`` is zero there, which makes
  a border voxel's weight vanish);
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
GAUSSIAN_SIGMA_SCALE = 0.125  # σ = n / 8 (MONAI's sigma_scale)
MIN_RELATIVE_WEIGHT = 1e-30
"""Smallest weight a window may give relative to its largest: sums of such weights stay
normal float32 numbers (above 1e-38), so they keep their ratios exactly."""

UserWindow = torch.Tensor | Callable[[tuple[int, int, int]], torch.Tensor]


def window_1d(name: str, size: int) -> torch.Tensor:
    """A 1-D window of ``size`` samples in float64, peak 1, strictly positive (a new tensor).

    Example:
        >>> from voxelflow.patches.blending import window_1d
        >>> [round(v, 3) for v in window_1d("hann", 4).tolist()]
        [0.172, 1.0, 1.0, 0.172]
    """
    check_choice("window", name, WINDOW_NAMES)
    if size <= 0:
        raise VoxelflowValueError(f"window size must be positive, got {size}")
    x = torch.arange(size, dtype=torch.float64) + 0.5
    if name == "average":
        return torch.ones(size, dtype=torch.float64)
    if name == "hann":
        values = torch.sin(math.pi * x / size) ** 2
    else:
        sigma = GAUSSIAN_SIGMA_SCALE * size
        values = torch.exp(-((x - size / 2) ** 2) / (2 * sigma**2))
    return values / values.max()


@functools.lru_cache(maxsize=32)
def _window_3d_cpu(name: str, size: tuple[int, int, int]) -> torch.Tensor:
    wi, wj, wk = (window_1d(name, n) for n in size)
    return wi[:, None, None] * wj[None, :, None] * wk[None, None, :]


def window_3d(
    name: str,
    size: Sequence[int],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The separable 3-D window of ``size``: a new tensor the caller owns.

    Built once per name and size (in float64, cached), then copied to
    ``dtype`` and ``device``, so changing the result in place never changes a
    later window.

    Example:
        >>> from voxelflow.patches.blending import window_3d
        >>> w = window_3d("hann", (8, 8, 4))
        >>> tuple(w.shape), bool(w.min() > 0), round(float(w.max()), 3)
        ((8, 8, 4), True, 1.0)
    """
    size3 = tuple(int(n) for n in size)
    window = _window_3d_cpu(name, size3)  # type: ignore[arg-type]
    return window.to(device=device, dtype=dtype, copy=True)


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
    if float(value.min()) < MIN_RELATIVE_WEIGHT * float(value.max()):
        raise VoxelflowValueError(
            f"window's smallest weight is {float(value.min()):.3g} of its largest "
            f"{float(value.max()):.3g}: below {MIN_RELATIVE_WEIGHT:g} of it the summed weights "
            "lose their ratios; raise the smallest weights, e.g. "
            "window.clamp_min(1e-6 * window.max())"
        )
    return value.to(device=device, dtype=dtype, copy=True)
