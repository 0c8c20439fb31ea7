"""voxelflow: deep learning on 3D medical images too large to read whole.

Lazy images over pluggable storage backends, patch-based training and
patch-based inference, with TorchIO's names: ``import voxelflow as tio``.

The public names are imported on first use (PEP 562), so that importing the
package, ``voxelflow --version`` and ``voxelflow --help`` do not import torch.
A new public name goes in ``_PUBLIC`` (where it lives) and in the
``TYPE_CHECKING`` block (for type checkers); ``tests/cli/test_startup.py``
checks that the two agree with ``__all__``. Submodules (``voxelflow.loader``)
are imported on first attribute access too.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
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
    from voxelflow.affine import AffineMatrix
    from voxelflow.backends import (
        register_backend,
        register_writer,
        unregister_backend,
        unregister_writer,
    )
    from voxelflow.batch import ImagesBatch, SubjectsBatch
    from voxelflow.image import INTENSITY, LABEL, Image, LabelMap, ScalarImage
    from voxelflow.loader import ImagesLoader, SubjectsDataset, SubjectsLoader
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
        BiasField,
        Blur,
        Clamp,
        Compose,
        Crop,
        CropOrPad,
        Flip,
        Gamma,
        Ghosting,
        HistogramStandardization,
        KeepLargestComponent,
        Lambda,
        Mask,
        Motion,
        Noise,
        Normalize,
        OneHot,
        OneOf,
        Pad,
        RandomBiasField,
        RandomBlur,
        RandomGamma,
        RandomGhosting,
        RandomMotion,
        RandomNoise,
        RandomSpike,
        RemapLabels,
        RemoveLabels,
        RescaleIntensity,
        SequentialLabels,
        SomeOf,
        Spike,
        Standardize,
        Transform,
        ZNormalization,
    )

#: Public name -> the module that defines it.
_PUBLIC: dict[str, str] = {
    "AffineMatrix": "voxelflow.affine",
    "BiasField": "voxelflow.transforms",
    "Blur": "voxelflow.transforms",
    "Clamp": "voxelflow.transforms",
    "Compose": "voxelflow.transforms",
    "Crop": "voxelflow.transforms",
    "CropOrPad": "voxelflow.transforms",
    "Flip": "voxelflow.transforms",
    "Gamma": "voxelflow.transforms",
    "Ghosting": "voxelflow.transforms",
    "GridSampler": "voxelflow.patches",
    "HistogramStandardization": "voxelflow.transforms",
    "INTENSITY": "voxelflow.image",
    "Image": "voxelflow.image",
    "ImagesBatch": "voxelflow.batch",
    "ImagesLoader": "voxelflow.loader",
    "KeepLargestComponent": "voxelflow.transforms",
    "LABEL": "voxelflow.image",
    "LabelMap": "voxelflow.image",
    "LabelSampler": "voxelflow.patches",
    "Lambda": "voxelflow.transforms",
    "Mask": "voxelflow.transforms",
    "MissingDependencyError": "voxelflow._errors",
    "Motion": "voxelflow.transforms",
    "Noise": "voxelflow.transforms",
    "Normalize": "voxelflow.transforms",
    "OneHot": "voxelflow.transforms",
    "OneOf": "voxelflow.transforms",
    "Pad": "voxelflow.transforms",
    "PatchAggregator": "voxelflow.patches",
    "PatchLocation": "voxelflow.patches",
    "Queue": "voxelflow.patches",
    "RandomBiasField": "voxelflow.transforms",
    "RandomBlur": "voxelflow.transforms",
    "RandomGamma": "voxelflow.transforms",
    "RandomGhosting": "voxelflow.transforms",
    "RandomMotion": "voxelflow.transforms",
    "RandomNoise": "voxelflow.transforms",
    "RandomSpike": "voxelflow.transforms",
    "RemapLabels": "voxelflow.transforms",
    "RemoveLabels": "voxelflow.transforms",
    "RescaleIntensity": "voxelflow.transforms",
    "ScalarImage": "voxelflow.image",
    "SequentialLabels": "voxelflow.transforms",
    "SomeOf": "voxelflow.transforms",
    "Spike": "voxelflow.transforms",
    "Standardize": "voxelflow.transforms",
    "Subject": "voxelflow.subject",
    "SubjectsBatch": "voxelflow.batch",
    "SubjectsDataset": "voxelflow.loader",
    "SubjectsLoader": "voxelflow.loader",
    "Transform": "voxelflow.transforms",
    "UniformSampler": "voxelflow.patches",
    "VoxelflowError": "voxelflow._errors",
    "VoxelflowFileNotFoundError": "voxelflow._errors",
    "VoxelflowIndexError": "voxelflow._errors",
    "VoxelflowKeyError": "voxelflow._errors",
    "VoxelflowRuntimeError": "voxelflow._errors",
    "VoxelflowTypeError": "voxelflow._errors",
    "VoxelflowValueError": "voxelflow._errors",
    "WeightedSampler": "voxelflow.patches",
    "ZNormalization": "voxelflow.transforms",
    "register_backend": "voxelflow.backends",
    "register_writer": "voxelflow.backends",
    "unregister_backend": "voxelflow.backends",
    "unregister_writer": "voxelflow.backends",
}

__all__ = [
    "INTENSITY",
    "LABEL",
    "AffineMatrix",
    "BiasField",
    "Blur",
    "Clamp",
    "Compose",
    "Crop",
    "CropOrPad",
    "Flip",
    "Gamma",
    "Ghosting",
    "GridSampler",
    "HistogramStandardization",
    "Image",
    "ImagesBatch",
    "ImagesLoader",
    "KeepLargestComponent",
    "LabelMap",
    "LabelSampler",
    "Lambda",
    "Mask",
    "MissingDependencyError",
    "Motion",
    "Noise",
    "Normalize",
    "OneHot",
    "OneOf",
    "Pad",
    "PatchAggregator",
    "PatchLocation",
    "Queue",
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
    "ScalarImage",
    "SequentialLabels",
    "SomeOf",
    "Spike",
    "Standardize",
    "Subject",
    "SubjectsBatch",
    "SubjectsDataset",
    "SubjectsLoader",
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


def __getattr__(name: str) -> Any:
    """Import a public name on first use and keep it (PEP 562)."""
    module = _PUBLIC.get(name)
    if module is None:
        if name.startswith("__") or importlib.util.find_spec(f"{__name__}.{name}") is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        return importlib.import_module(f"{__name__}.{name}")  # a submodule: voxelflow.loader
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
