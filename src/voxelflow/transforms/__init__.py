"""Transforms: Compose and the transforms of a patch pipeline.

Modules: ``transform`` (the base: parameters, ``p``, history), ``parameters``
(fixed, range, choice, distribution), ``lazy`` (region-computed images),
``inverse`` (undoing a history), then one module per family of transforms.
"""

from voxelflow.transforms.compose import Compose, OneOf
from voxelflow.transforms.intensity import Clamp, Noise, RescaleIntensity, ZNormalization
from voxelflow.transforms.inverse import get_inverse_transform
from voxelflow.transforms.lambda_ import Lambda
from voxelflow.transforms.parameters import Choice
from voxelflow.transforms.spatial import Crop, CropOrPad, Flip, Pad
from voxelflow.transforms.transform import AppliedTransform, Transform

__all__ = [
    "AppliedTransform",
    "Choice",
    "Clamp",
    "Compose",
    "Crop",
    "CropOrPad",
    "Flip",
    "Lambda",
    "Noise",
    "OneOf",
    "Pad",
    "RescaleIntensity",
    "Transform",
    "ZNormalization",
    "get_inverse_transform",
]
