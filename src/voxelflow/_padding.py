"""Padding of ``(C, I, J, K)`` tensors: the one implementation for patches and transforms.

A mode is ``None`` (no padding wanted), a number (constant padding with that
value), or one of NumPy's names ``"constant"`` (zeros), ``"edge"``,
``"reflect"``, ``"symmetric"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
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

    Constant modes allocate the output once and copy the tensor in; the others
    go through ``np.pad`` on the CPU.

    Example:
        >>> import torch
        >>> from voxelflow._padding import pad_tensor
        >>> pad_tensor(torch.ones(1, 1, 1, 2), (1, 0, 0), (0, 0, 1), 5).flatten().tolist()
        [5.0, 5.0, 5.0, 1.0, 1.0, 5.0]
    """
    before, after = [int(b) for b in before], [int(a) for a in after]
    if not any(before) and not any(after):
        return tensor
    value = constant_value(mode)
    if value is not None:
        shape = [tensor.shape[0]] + [
            n + b + a for n, b, a in zip(tensor.shape[1:], before, after, strict=True)
        ]
        out = torch.full(shape, value, dtype=tensor.dtype, device=tensor.device)
        inner = tuple(slice(b, b + n) for b, n in zip(before, tensor.shape[1:], strict=True))
        out[(slice(None), *inner)] = tensor
        return out
    widths = [(0, 0), *zip(before, after, strict=True)]
    padded = np.pad(tensor.cpu().numpy(), widths, mode=mode)  # type: ignore[call-overload]
    return torch.from_numpy(padded).to(tensor.device)
