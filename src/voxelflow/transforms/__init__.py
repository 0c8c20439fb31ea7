"""Transforms: Compose and the transforms of a patch pipeline.

Modules: ``transform`` (the base: parameters, ``p``, history), ``parameters``
(fixed, range, choice, distribution), ``lazy`` (region-computed images),
``statistics`` (whole-volume statistics in bounded memory), ``inverse``
(undoing a history), then one module (or package) per family of transforms:
``compose``, ``intensity``, ``labels``, ``spatial``, ``lambda_``.
"""

from voxelflow.transforms.compose import Compose, OneOf, SomeOf
from voxelflow.transforms.intensity import (
    BiasField,
    Blur,
    Clamp,
    Gamma,
    Ghosting,
    HistogramStandardization,
    IntensityTransform,
    Mask,
    Motion,
    Noise,
    Normalize,
    RandomBiasField,
    RandomBlur,
    RandomGamma,
    RandomGhosting,
    RandomMotion,
    RandomNoise,
    RandomSpike,
    RescaleIntensity,
    Spike,
    Standardize,
    ZNormalization,
    compute_histogram_landmarks,
)
from voxelflow.transforms.inverse import get_inverse_transform
from voxelflow.transforms.labels import (
    KeepLargestComponent,
    OneHot,
    RemapLabels,
    RemoveLabels,
    SequentialLabels,
)
from voxelflow.transforms.lambda_ import Lambda
from voxelflow.transforms.parameters import Choice
from voxelflow.transforms.spatial import Crop, CropOrPad, Flip, Pad
from voxelflow.transforms.transform import AppliedTransform, Transform

__all__ = [
    "AppliedTransform",
    "BiasField",
    "Blur",
    "Choice",
    "Clamp",
    "Compose",
    "Crop",
    "CropOrPad",
    "Flip",
    "Gamma",
    "Ghosting",
    "HistogramStandardization",
    "IntensityTransform",
    "KeepLargestComponent",
    "Lambda",
    "Mask",
    "Motion",
    "Noise",
    "Normalize",
    "OneHot",
    "OneOf",
    "Pad",
    "RandomBiasField",
    "RandomBlur",
    "RandomGamma",
    "RandomGhosting",
    "RandomMotion",
    "RandomNoise",
    "RandomSpike",
    "RemapLabels",
    "RemoveLabels",
    "RescaleIntensity",
    "SequentialLabels",
    "SomeOf",
    "Spike",
    "Standardize",
    "Transform",
    "ZNormalization",
    "compute_histogram_landmarks",
    "get_inverse_transform",
]
