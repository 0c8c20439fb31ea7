"""voxelflow: deep learning on 3D medical images too large to read whole.

Lazy images over pluggable storage backends, patch-based training and
patch-based inference, with TorchIO's names: ``import voxelflow as tio``.
"""

from voxelflow._errors import (
    MissingDependencyError,
    VoxelflowError,
    VoxelflowFileNotFoundError,
    VoxelflowIndexError,
    VoxelflowKeyError,
    VoxelflowRuntimeError,
    VoxelflowTypeError,
    VoxelflowValueError,
)
from voxelflow.backends import (
    register_backend,
    register_writer,
    unregister_backend,
    unregister_writer,
)
from voxelflow.batch import ImagesBatch, SubjectsBatch
from voxelflow.image import INTENSITY, LABEL, Image, LabelMap, ScalarImage
from voxelflow.patches import (
    GridSampler,
    LabelSampler,
    PatchAggregator,
    PatchLocation,
    Queue,
    UniformSampler,
    WeightedSampler,
)
from voxelflow.subject import Subject
from voxelflow.transforms import (
    Clamp,
    Compose,
    Crop,
    CropOrPad,
    Flip,
    Lambda,
    Noise,
    OneOf,
    Pad,
    RescaleIntensity,
    Transform,
    ZNormalization,
)

__version__ = "0.1.0"

__all__ = [
    "INTENSITY",
    "LABEL",
    "Clamp",
    "Compose",
    "Crop",
    "CropOrPad",
    "Flip",
    "GridSampler",
    "Image",
    "ImagesBatch",
    "LabelMap",
    "LabelSampler",
    "Lambda",
    "MissingDependencyError",
    "Noise",
    "OneOf",
    "Pad",
    "PatchAggregator",
    "PatchLocation",
    "Queue",
    "RescaleIntensity",
    "ScalarImage",
    "Subject",
    "SubjectsBatch",
    "Transform",
    "UniformSampler",
    "VoxelflowError",
    "VoxelflowFileNotFoundError",
    "VoxelflowIndexError",
    "VoxelflowKeyError",
    "VoxelflowRuntimeError",
    "VoxelflowTypeError",
    "VoxelflowValueError",
    "WeightedSampler",
    "ZNormalization",
    "register_backend",
    "register_writer",
    "unregister_backend",
    "unregister_writer",
]
