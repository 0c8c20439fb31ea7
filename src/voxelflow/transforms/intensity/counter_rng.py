"""A counter-based normal generator: the noise of a voxel is a function of its index.

``Noise`` must give a patch exactly the values the same region of the whole
noisy volume has, whatever region is read first. So the value at a voxel
does not come from a stream but from a hash of ``(seed, linear index)``, where
the linear index ``c * I*J*K + (i * J + j) * K + k`` counts the channel and the
voxel's place in the *whole* volume: SplitMix64's finaliser (Steele, Lea and
Flood 2014) of ``seed + (index + 1) * 0x9E3779B97F4A7C15``, whose 64 bits give
two 24-bit uniforms for the Box–Muller transform (two independent standard
normals per voxel; the tails are cut beyond 5.89 standard deviations, where
a 24-bit uniform ends).

Regions are hashed in chunks of about :data:`CHUNK` voxels with vectorised
integer operations: NumPy's ``uint64`` (wrapping arithmetic) on the CPU,
``torch.int64`` with masked shifts on other devices. The integers are the same
everywhere; the float32 Box–Muller step is computed by the same element-wise
functions for every voxel, so a region equals the same region of the whole
volume bit for bit on a given device.

Example:
    >>> from voxelflow.transforms.intensity.counter_rng import normal_pairs
    >>> z1, z2 = normal_pairs(7, (0, 0, 0), (2, 2, 2), (1, 4, 4, 4))
    >>> a, _ = normal_pairs(7, (1, 1, 1), (2, 2, 2), (1, 4, 4, 4))
    >>> bool((a[0, 0, 0, 0] == z1[0, 1, 1, 1]).item()), z1.dtype
    (True, torch.float32)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

CHUNK = 1 << 16
"""Voxels hashed at once (their temporaries stay in the CPU's cache)."""

_GAMMA = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_SCALE = np.float32(2.0**-24)
_TWO_PI = np.float32(2.0 * np.pi)


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def normal_pairs(
    seed: int,
    start: Sequence[int],
    stop: Sequence[int],
    volume_shape: Sequence[int],
    device: torch.device | str | None = None,
    *,
    second: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Two independent float32 standard normals for each voxel of a region.

    Args:
        seed: the noise seed (any int; used modulo 2**64).
        start, stop: the region, in voxels of the whole volume (three each).
        volume_shape: ``(C, I, J, K)`` of the whole volume.
        device: where to compute (default CPU).
        second: also return the second normal of each pair (else ``None``).

    Returns:
        Two tensors of shape ``(C, *region)`` (the second may be ``None``).
    """
    device = torch.device("cpu") if device is None else torch.device(device)
    channels, size_i, size_j, size_k = (int(n) for n in volume_shape)
    shape = (channels, *(int(b) - int(a) for a, b in zip(start, stop, strict=True)))
    if device.type == "cpu":
        z1, z2 = _normal_pairs_numpy(seed, start, shape, (size_i, size_j, size_k), second)
        return torch.from_numpy(z1), None if z2 is None else torch.from_numpy(z2)
    z1_torch, z2_torch = _normal_pairs_torch(seed, start, shape, (size_i, size_j, size_k), device)
    return z1_torch, z2_torch if second else None


def _normal_pairs_numpy(
    seed: int,
    start: Sequence[int],
    shape: Sequence[int],
    volume: Sequence[int],
    second: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    channels, ri, rj, rk = shape
    size_i, size_j, size_k = volume
    z1 = np.empty(shape, dtype=np.float32)
    z2 = np.empty(shape, dtype=np.float32) if second else None
    if z1.size == 0:
        return z1, z2
    # index of (j, k) inside a plane, then one offset per (channel, plane i)
    j = np.arange(start[1], start[1] + rj, dtype=np.uint64)
    k = np.arange(start[2], start[2] + rk, dtype=np.uint64)
    in_plane = (j[:, None] * np.uint64(size_k) + k[None, :]).ravel()
    planes = max(1, CHUNK // in_plane.size)
    seed64 = np.uint64(int(seed) % (1 << 64))
    flat1 = z1.reshape(channels, ri, -1)
    flat2 = None if z2 is None else z2.reshape(channels, ri, -1)
    with np.errstate(over="ignore"):
        for c in range(channels):
            for first in range(0, ri, planes):
                i = np.arange(start[0] + first, start[0] + min(ri, first + planes), dtype=np.uint64)
                offsets = (np.uint64(c) * np.uint64(size_i) + i) * np.uint64(size_j * size_k)
                index = offsets[:, None] + in_plane[None, :]
                a, b = _box_muller_numpy(_splitmix_numpy(index, seed64), second)
                flat1[c, first : first + len(i)] = a
                if flat2 is not None and b is not None:
                    flat2[c, first : first + len(i)] = b
    return z1, z2


def _splitmix_numpy(index: np.ndarray, seed: np.uint64) -> np.ndarray:
    z = index + np.uint64(1)
    z *= np.uint64(_GAMMA)
    z += seed
    z ^= z >> np.uint64(30)
    z *= np.uint64(_MIX1)
    z ^= z >> np.uint64(27)
    z *= np.uint64(_MIX2)
    z ^= z >> np.uint64(31)
    return z


def _box_muller_numpy(
    bits: np.ndarray, second: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    u1 = (bits >> np.uint64(40)).astype(np.float32)
    u1 += np.float32(0.5)
    u1 *= _SCALE  # (0, 1): never 0, so the logarithm is finite
    u2 = ((bits >> np.uint64(16)) & np.uint64(0xFFFFFF)).astype(np.float32)
    u2 *= _SCALE * _TWO_PI
    np.log(u1, out=u1)
    u1 *= np.float32(-2.0)
    np.sqrt(u1, out=u1)
    return u1 * np.cos(u2), (u1 * np.sin(u2)) if second else None


def _normal_pairs_torch(
    seed: int,
    start: Sequence[int],
    shape: Sequence[int],
    volume: Sequence[int],
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    channels, ri, rj, rk = shape
    size_i, size_j, size_k = volume
    axes = [
        torch.arange(a, a + n, dtype=torch.int64, device=device)
        for a, n in zip(start, (ri, rj, rk), strict=True)
    ]
    c = torch.arange(channels, dtype=torch.int64, device=device)
    index = (
        (c[:, None, None, None] * size_i + axes[0][None, :, None, None]) * size_j
        + axes[1][None, None, :, None]
    ) * size_k + axes[2][None, None, None, :]
    # int64 arithmetic wraps like uint64; shifts are made logical with masks
    z = (index + 1) * _signed(_GAMMA) + _signed(int(seed) % (1 << 64))
    z = (z ^ _shift_right(z, 30)) * _signed(_MIX1)
    z = (z ^ _shift_right(z, 27)) * _signed(_MIX2)
    z = z ^ _shift_right(z, 31)
    u1 = (_shift_right(z, 40).to(torch.float32) + 0.5) * float(_SCALE)
    u2 = (_shift_right(z, 16) & 0xFFFFFF).to(torch.float32) * float(_SCALE * _TWO_PI)
    radius = torch.sqrt(torch.log(u1) * -2.0)
    return radius * torch.cos(u2), radius * torch.sin(u2)


def _shift_right(z: torch.Tensor, bits: int) -> torch.Tensor:
    return (z >> bits) & ((1 << (64 - bits)) - 1)
