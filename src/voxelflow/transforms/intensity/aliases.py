"""TorchIO 1.x's random intensity transforms, with their 1.x parameters and defaults.

Each alias is the TorchIO 2.0 transform with 1.x's reading of its arguments
(a number ``d`` usually meant the range ``(-d, d)`` or ``(0, d)``); it records
the same parameters in the history, so its inverse is the 2.0 transform's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from voxelflow._errors import VoxelflowValueError
from voxelflow.transforms.intensity.bias_field import BiasField
from voxelflow.transforms.intensity.blur import Blur
from voxelflow.transforms.intensity.gamma import Gamma
from voxelflow.transforms.intensity.kspace import Ghosting, Motion, Spike
from voxelflow.transforms.intensity.noise import Noise
from voxelflow.transforms.parameters import symmetric_range


def _from_zero(value: Any) -> Any:
    """1.x's ``d`` → ``(0, d)`` for non-negative parameters; three numbers → three ranges."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0.0, float(value))
    if isinstance(value, Sequence) and len(value) == 3:
        return tuple(x for v in value for x in (0.0, float(v)))
    return value


class RandomNoise(Noise):
    """TorchIO 1.x's ``RandomNoise``: ``mean=d`` means ``(-d, d)``, ``std=d`` means ``(0, d)``.

    Example:
        >>> import torch, voxelflow as tio
        >>> tio.RandomNoise(std=0.1).std.sample_1d(torch.Generator().manual_seed(0)) <= 0.1
        True
    """

    def __init__(
        self,
        mean: float | tuple[float, float] = 0.0,
        std: float | tuple[float, float] = (0.0, 0.25),
        **kwargs: Any,
    ) -> None:
        super().__init__(mean=symmetric_range(mean), std=_from_zero(std), **kwargs)


class RandomGamma(Gamma):
    """TorchIO 1.x's ``RandomGamma``: ``log_gamma=d`` means ``(-d, d)`` (default ``(-0.3, 0.3)``).

    Example:
        >>> import voxelflow as tio
        >>> tio.RandomGamma(log_gamma=0.2).log_gamma
        (-0.2, 0.2)
    """

    def __init__(self, log_gamma: float | tuple[float, float] = (-0.3, 0.3), **kwargs: Any) -> None:
        super().__init__(log_gamma=symmetric_range(log_gamma), **kwargs)


class RandomBiasField(BiasField):
    """TorchIO 1.x's ``RandomBiasField``: a polynomial field of ``order``, each coefficient
    drawn from ``(-d, d)`` for ``coefficients=d`` (default 0.5).

    Example:
        >>> import voxelflow as tio
        >>> tio.RandomBiasField().coefficients, tio.RandomBiasField().order
        ((-0.5, 0.5), 3)
    """

    def __init__(
        self, coefficients: float | tuple[float, float] = 0.5, order: int = 3, **kwargs: Any
    ) -> None:
        super().__init__(coefficients=symmetric_range(coefficients), order=order, **kwargs)


class RandomBlur(Blur):
    """TorchIO 1.x's ``RandomBlur``: ``std=d`` means ``(0, d)`` mm per axis (default ``(0, 2)``).

    Example:
        >>> import voxelflow as tio
        >>> tio.RandomBlur(std=3).std
        (0.0, 3.0)
    """

    def __init__(self, std: float | Sequence[float] = (0.0, 2.0), **kwargs: Any) -> None:
        super().__init__(std=_from_zero(std), **kwargs)


class RandomMotion(Motion):
    """TorchIO 1.x's ``RandomMotion`` (same parameters as :class:`Motion`; only linear
    interpolation).

    Example:
        >>> import voxelflow as tio
        >>> tio.RandomMotion(degrees=5).degrees
        (-5.0, 5.0)
    """

    def __init__(
        self,
        degrees: float | tuple[float, float] = 10.0,
        translation: float | tuple[float, float] = 10.0,
        num_transforms: int = 2,
        image_interpolation: str = "linear",
        **kwargs: Any,
    ) -> None:
        if image_interpolation != "linear":
            raise VoxelflowValueError(
                f"RandomMotion: image_interpolation={image_interpolation!r} is not supported; "
                "the moved images are resampled trilinearly (pass 'linear')"
            )
        super().__init__(
            degrees=degrees, translation=translation, num_transforms=num_transforms, **kwargs
        )


class RandomGhosting(Ghosting):
    """TorchIO 1.x's ``RandomGhosting``: ``num_ghosts=n`` means ``(0, n)`` (default
    ``(4, 10)``), ``intensity=d`` means ``(0, d)`` (default ``(0.5, 1)``).

    Example:
        >>> import voxelflow as tio
        >>> tio.RandomGhosting(intensity=0.8).intensity
        (0.0, 0.8)
    """

    def __init__(
        self,
        num_ghosts: int | tuple[int, int] = (4, 10),
        axes: int | Sequence[int] = (0, 1, 2),
        intensity: float | tuple[float, float] = (0.5, 1.0),
        restore: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            num_ghosts=_from_zero(num_ghosts),
            axes=axes,
            intensity=_from_zero(intensity),
            restore=restore,
            **kwargs,
        )


class RandomSpike(Spike):
    """TorchIO 1.x's ``RandomSpike``: ``num_spikes=n`` means ``(0, n)`` (default ``(1, 1)``),
    ``intensity=d`` means ``(-d, d)`` (default ``(1, 3)``).

    Example:
        >>> import voxelflow as tio
        >>> tio.RandomSpike(intensity=2).intensity
        (-2.0, 2.0)
    """

    def __init__(
        self,
        num_spikes: int | tuple[int, int] = (1, 1),
        intensity: float | tuple[float, float] = (1.0, 3.0),
        **kwargs: Any,
    ) -> None:
        super().__init__(
            num_spikes=_from_zero(num_spikes), intensity=symmetric_range(intensity), **kwargs
        )
