"""Intensity transforms: they change intensity images and leave label maps alone.

One module per transform (or family): ``base`` (the lazy base class),
``noise`` (with ``counter_rng``, its counter-based generator), ``gamma``,
``bias_field``, ``blur``, ``normalization`` (``Normalize``/``RescaleIntensity``,
``Standardize``/``ZNormalization``), ``clamp``, ``mask`` (with ``masking``),
``histogram_standardization``, ``kspace`` (``Motion``, ``Ghosting``, ``Spike``)
and ``aliases`` (TorchIO 1.x's ``Random*`` names).
"""

from voxelflow.transforms.intensity.aliases import (
    RandomBiasField,
    RandomBlur,
    RandomGamma,
    RandomGhosting,
    RandomMotion,
    RandomNoise,
    RandomSpike,
)
from voxelflow.transforms.intensity.base import IntensityTransform
from voxelflow.transforms.intensity.bias_field import BiasField
from voxelflow.transforms.intensity.blur import Blur
from voxelflow.transforms.intensity.clamp import Clamp
from voxelflow.transforms.intensity.gamma import Gamma
from voxelflow.transforms.intensity.histogram_standardization import (
    HistogramStandardization,
    compute_histogram_landmarks,
)
from voxelflow.transforms.intensity.kspace import Ghosting, Motion, Spike
from voxelflow.transforms.intensity.mask import Mask
from voxelflow.transforms.intensity.noise import Noise
from voxelflow.transforms.intensity.normalization import (
    Normalize,
    RescaleIntensity,
    Standardize,
    ZNormalization,
)

__all__ = [
    "BiasField",
    "Blur",
    "Clamp",
    "Gamma",
    "Ghosting",
    "HistogramStandardization",
    "IntensityTransform",
    "Mask",
    "Motion",
    "Noise",
    "Normalize",
    "RandomBiasField",
    "RandomBlur",
    "RandomGamma",
    "RandomGhosting",
    "RandomMotion",
    "RandomNoise",
    "RandomSpike",
    "RescaleIntensity",
    "Spike",
    "Standardize",
    "ZNormalization",
    "compute_histogram_landmarks",
]
