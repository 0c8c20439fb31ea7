"""``Gamma``: change contrast by raising intensities to a power."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch

from voxelflow.image import Image
from voxelflow.subject import Subject
from voxelflow.transforms.intensity.base import IntensityTransform, float_dtype, map_lazily
from voxelflow.transforms.lazy import Region
from voxelflow.transforms.parameters import ParameterValue, to_range
from voxelflow.transforms.transform import Transform


class Gamma(IntensityTransform):
    r"""Raise intensities to the power :math:`\gamma = e^{\beta}`.

    :math:`\beta` (``log_gamma``) is fixed or drawn at each call; positive values
    expand contrast, negative values compress it. Negative intensities follow
    TorchIO: :math:`\operatorname{sign}(I)\,|I|^{\gamma}`. Lazy (voxel by voxel);
    invertible (:math:`\gamma \to 1/\gamma`).

    Args:
        log_gamma: :math:`\beta`: a number (fixed), ``(a, b)`` (uniform), a
            ``Choice`` or a ``torch.distributions.Distribution``. The default 0 is
            the identity. (TorchIO 1.x's ``RandomGamma(log_gamma=0.3)`` meant
            ``(-0.3, 0.3)``: see :class:`~voxelflow.transforms.RandomGamma`.)
        **kwargs: ``p``, ``seed``, ``include``, ``exclude``.

    Example:
        >>> import torch, voxelflow as tio
        >>> out = tio.Gamma(log_gamma=math.log(2))(torch.tensor([[[[-3.0]], [[2.0]]]]))
        >>> [round(v, 4) for v in out.flatten().tolist()]
        [-9.0, 4.0]
    """

    patchwise = True
    invertible = True

    def __init__(self, log_gamma: ParameterValue = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.log_gamma = to_range(log_gamma, "Gamma log_gamma")

    def make_params(self, subject: Subject, generator: torch.Generator) -> dict[str, Any]:
        return {"log_gamma": self.log_gamma.sample_1d(generator)}

    def transform_image(
        self, name: str, image: Image, subject: Subject, params: dict[str, Any]
    ) -> Image:
        gamma = math.exp(float(params["log_gamma"]))
        dtype = float_dtype(image.dtype)
        function = partial(power, gamma=gamma)
        return map_lazily(image, function, dtype=dtype, key=("Gamma", gamma))

    def inverse(self, params: dict[str, Any]) -> Transform:
        return Gamma(log_gamma=-float(params["log_gamma"]))

    def __repr__(self) -> str:
        return f"Gamma(log_gamma={self.log_gamma!r}, p={self.p})"


def power(data: torch.Tensor, region: Region, *, gamma: float) -> torch.Tensor:
    """``sign(x) * |x| ** gamma``, computed as ``exp(gamma * log|x|)`` in the output's float
    dtype (element-wise functions whose result does not depend on where the element sits
    in the tensor, unlike ``pow``'s vectorised and scalar paths)."""
    x = data.to(float_dtype(data.dtype))
    if gamma == 1.0:
        return x
    return torch.exp(torch.log(x.abs()) * gamma) * x.sign()
