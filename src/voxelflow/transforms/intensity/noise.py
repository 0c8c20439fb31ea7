"""``Noise``: Gaussian or Rician noise, exactly the same on a patch as on the whole volume."""

from __future__ import annotations

import zlib
from functools import partial
from typing import Any

import torch

from voxelflow._random import derive_seed, seed_from
from voxelflow.image import Image
from voxelflow.subject import Subject
from voxelflow.transforms.intensity.base import (
    IntensityTransform,
    float_dtype,
    map_lazily,
    unchanged,
)
from voxelflow.transforms.intensity.counter_rng import normal_pairs
from voxelflow.transforms.lazy import Region
from voxelflow.transforms.parameters import ParameterValue, to_range


class Noise(IntensityTransform):
    r"""Add Gaussian noise (or, with ``rician=True``, Rician noise) to intensity images.

    Gaussian: :math:`I + n` with :math:`n \sim \mathcal{N}(\mu, \sigma^2)`.
    Rician, as TorchIO defines it (the magnitude of a complex signal with
    Gaussian noise on both parts, typical of MRI):
    :math:`\sqrt{(I + n_1)^2 + n_2^2}` with independent
    :math:`n_1, n_2 \sim \mathcal{N}(\mu, \sigma^2)`.

    Lazy and exact patch by patch: the noise of a voxel is a function of the
    drawn seed, the image's name, the channel and the voxel's index in the whole
    volume (:mod:`~voxelflow.transforms.intensity.counter_rng`), so a patch read
    from the noisy image equals the same region of the whole noisy volume bit
    for bit, and reading it computes noise for the patch only. Noise values are
    computed in float32. Two images of a subject get independent noise.

    Args:
        mean: :math:`\mu`: a number (fixed), ``(a, b)`` (uniform at each call),
            a ``Choice`` or a ``torch.distributions.Distribution``.
        std: :math:`\sigma`, non-negative, in the same forms.
        rician: add Rician noise instead of Gaussian.
        **kwargs: ``p``, ``seed``, ``include``, ``exclude`` (see :class:`~voxelflow.Transform`).

    Example:
        >>> import torch, voxelflow as tio
        >>> noisy = tio.Noise(std=0.5, seed=0)(tio.ScalarImage(torch.zeros(1, 20, 20, 20)))
        >>> noisy.is_loaded, round(noisy.data.std().item(), 1)
        (False, 0.5)
        >>> torch.equal(noisy[:, 3:7, :5, 10:].data, noisy.data[:, 3:7, :5, 10:])
        True
    """

    patchwise = True

    def __init__(
        self,
        mean: ParameterValue = 0.0,
        std: ParameterValue = 0.25,
        rician: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.mean = to_range(mean, "Noise mean")
        self.std = to_range(std, "Noise std", nonnegative=True)
        self.rician = bool(rician)

    def make_params(self, subject: Subject, generator: torch.Generator) -> dict[str, Any]:
        return {
            "mean": self.mean.sample_1d(generator),
            "std": self.std.sample_1d(generator),
            "seed": seed_from(generator),
            "rician": self.rician,
        }

    def transform_image(
        self, name: str, image: Image, subject: Subject, params: dict[str, Any]
    ) -> Image:
        mean, std, rician = float(params["mean"]), float(params["std"]), bool(params["rician"])
        if mean == 0 and std == 0 and not rician:
            return unchanged(image)
        # one seed per call, mixed with the image's name: two images get different noise
        seed = derive_seed(int(params["seed"]), zlib.crc32(name.encode()))
        function = partial(add_noise, seed=seed, mean=mean, std=std, rician=rician)
        key = ("Noise", seed, mean, std, rician)
        return map_lazily(image, function, dtype=float_dtype(image.dtype), key=key)

    def __repr__(self) -> str:
        rician = ", rician=True" if self.rician else ""
        return f"Noise(mean={self.mean!r}, std={self.std!r}{rician}, p={self.p})"


def add_noise(
    data: torch.Tensor, region: Region, *, seed: int, mean: float, std: float, rician: bool
) -> torch.Tensor:
    """``data`` (the region) with the region's noise added (float result)."""
    shape = (data.shape[0], *region.volume_shape)
    z1, z2 = normal_pairs(seed, region.start, region.stop, shape, data.device, second=rician)
    dtype = float_dtype(data.dtype)
    x = data.to(dtype)
    n1 = (z1.to(dtype) * std) + mean
    if not rician:
        return x + n1
    assert z2 is not None
    n2 = (z2.to(dtype) * std) + mean
    return torch.sqrt((x + n1) ** 2 + n2**2)
