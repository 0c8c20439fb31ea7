"""Transforms: Compose and the transforms a patch-training pipeline needs first."""

from voxelflow.transforms.compose import Compose, OneOf
from voxelflow.transforms.intensity import Clamp, Noise, RescaleIntensity, ZNormalization
from voxelflow.transforms.lambda_ import Lambda
from voxelflow.transforms.spatial import Crop, CropOrPad, Flip, Pad
from voxelflow.transforms.transform import Transform

__all__ = [
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
]
