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
from voxelflow.patches import GridSampler, PatchAggregator, PatchLocation
from voxelflow.subject import Subject

__version__ = "0.1.0"

__all__ = [
    "INTENSITY",
    "LABEL",
    "GridSampler",
    "Image",
    "ImagesBatch",
    "LabelMap",
    "MissingDependencyError",
    "PatchAggregator",
    "PatchLocation",
    "ScalarImage",
    "Subject",
    "SubjectsBatch",
    "VoxelflowError",
    "VoxelflowFileNotFoundError",
    "VoxelflowIndexError",
    "VoxelflowKeyError",
    "VoxelflowRuntimeError",
    "VoxelflowTypeError",
    "VoxelflowValueError",
    "register_backend",
    "register_writer",
    "unregister_backend",
    "unregister_writer",
]
