"""Example data for the docs and for trying voxelflow, with nothing to download.

* :func:`nibabel_file`: the small real NIfTI files that nibabel ships (found by
  package path: nothing else is imported, pytest is not needed).
* :func:`mni152`: the MNI ICBM152 2009a T1 template and its grey and white
  matter probability maps (197×233×189, 1 mm), which ship inside ``nilearn``
  (``pip install nilearn``).
* :func:`phantom`: a seeded synthetic head: smooth intensities and a label
  map, of any size, in memory or written to files.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import nibabel as nib
import numpy as np

from voxelflow._errors import (
    MissingDependencyError,
    VoxelflowFileNotFoundError,
    VoxelflowKeyError,
    VoxelflowValueError,
    did_you_mean,
)
from voxelflow.image import LabelMap, ScalarImage
from voxelflow.subject import Subject

__all__ = ["PHANTOM_LABELS", "mni152", "mni152_paths", "nibabel_file", "nibabel_files", "phantom"]

_MNI = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}

PHANTOM_LABELS = {0: "background", 1: "skull", 2: "brain", 3: "lesion"}
"""The classes of :func:`phantom`'s label map."""


def _package_dir(package: str) -> Path | None:
    """Where ``package`` is installed, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _nibabel_data() -> Path:
    root = _package_dir("nibabel")
    assert root is not None  # nibabel is a dependency of voxelflow
    return root / "tests" / "data"


def nibabel_files() -> list[str]:
    """Names of the NIfTI files nibabel ships (``nibabel/tests/data``).

    Example:
        >>> import voxelflow as tio
        >>> "example4d.nii.gz" in tio.datasets.nibabel_files()
        True
    """
    return sorted(
        path.name
        for path in _nibabel_data().iterdir()
        if path.name.endswith((".nii", ".nii.gz")) and ".dconn." not in path.name
    )


def nibabel_file(name: str = "example4d.nii.gz") -> Path:
    """The path of a small real NIfTI file that nibabel ships.

    ``example4d.nii.gz`` (2 channels of 128×96×24, int16), ``anatomical.nii``
    (33×41×25, big-endian int16), ``functional.nii`` (20 channels of 17×21×3,
    int16 with ``scl_slope``), ``standard.nii.gz`` (4×5×7, uint8), and others:
    see :func:`nibabel_files`.

    Example:
        >>> import voxelflow as tio
        >>> tio.ScalarImage(tio.datasets.nibabel_file("anatomical.nii")).shape
        (1, 33, 41, 25)
    """
    path = _nibabel_data() / name
    if not path.is_file():
        names = nibabel_files()
        raise VoxelflowKeyError(
            f"nibabel ships no file {name!r}; available: {', '.join(names)}."
            + did_you_mean(name, names)
        )
    return path


def mni152_paths() -> dict[str, Path]:
    """Paths of the MNI ICBM152 files inside the installed ``nilearn`` package
    (keys ``"t1"``, ``"gm"``, ``"wm"``); nilearn is found, not imported."""
    root = _package_dir("nilearn")
    if root is None:
        raise MissingDependencyError(
            "the MNI ICBM152 template ships inside the package 'nilearn', which is not "
            "installed; run: pip install nilearn"
        )
    paths = {key: root / "datasets" / "data" / name for key, name in _MNI.items()}
    for path in paths.values():
        if not path.is_file():
            raise VoxelflowFileNotFoundError(
                f"{path}: not found in the installed nilearn; reinstall it: pip install -U nilearn"
            )
    return paths


def mni152() -> Subject:
    """The MNI ICBM152 2009a template as a subject of lazy images: ``t1`` and the
    ``gm``/``wm`` probability maps (stored as uint8, 0–255), 197×233×189 at 1 mm.

    Needs ``nilearn`` (``pip install nilearn``), whose package ships the files.
    """
    paths = mni152_paths()
    return Subject(
        t1=ScalarImage(paths["t1"]),
        gm=ScalarImage(paths["gm"]),
        wm=ScalarImage(paths["wm"]),
    )


def phantom(
    shape: int | tuple[int, int, int] = 64,
    *,
    seed: int = 0,
    spacing: float | tuple[float, float, float] = 1.0,
    directory: str | os.PathLike[str] | None = None,
    suffix: str = ".nii.gz",
    t1_dtype: str = "float32",
) -> Subject:
    """A synthetic head: ``t1`` (smooth intensities) and ``seg`` (uint8 labels).

    Labels (:data:`PHANTOM_LABELS`): 0 background, 1 skull (an ellipsoidal
    shell), 2 brain (inside it), 3 lesions (a few small balls in the brain,
    placed by ``seed``). The intensity is a mean per class times a smooth bias
    field, plus a little noise; the same seed gives the same volumes. The
    world origin is at the centre of the volume (RAS+, ``spacing`` mm voxels).
    The images are lazy, in memory or in files: nothing is converted until read.

    Args:
        shape: the spatial shape (one int for a cube).
        seed: seeds lesion placement, the bias field and the noise.
        spacing: voxel size in mm.
        directory: if given, ``t1`` and ``seg`` are written there as
            ``t1{suffix}`` and ``seg{suffix}`` (the directory is created) and the
            returned subject reads them lazily.
        suffix: the file format when writing (``.nii``, ``.nii.gz``, ``.nii.zarr``...).
        t1_dtype: how ``t1`` is stored: ``"float32"`` (values about 0–1) or an
            integer type as scanners write (``"uint8"``: 0–255, ``"int16"`` or
            ``"uint16"``: 0–4095). ``t1.data`` is float32 either way (the dtype
            policy); ``t1.stored_dtype`` and the files keep this type.

    Example:
        >>> import voxelflow as tio
        >>> subject = tio.datasets.phantom((40, 48, 32), seed=1)
        >>> subject.spatial_shape, subject.seg.dtype, sorted(subject.seg.data.unique().tolist())
        ((40, 48, 32), torch.uint8, [0, 1, 2, 3])
    """
    size = (shape,) * 3 if isinstance(shape, int) else tuple(int(n) for n in shape)
    if len(size) != 3 or min(size) < 8:
        raise VoxelflowValueError(
            f"phantom: shape must be three sizes of at least 8, got {shape!r}"
        )
    voxel = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (3,))
    rng = np.random.default_rng(seed)
    # Coordinates in [-1, 1] along each axis.
    axes = np.meshgrid(*(np.linspace(-1.0, 1.0, n) for n in size), indexing="ij", sparse=True)
    radius = np.sqrt(sum((a / r) ** 2 for a, r in zip(axes, (0.9, 0.85, 0.8), strict=True)))
    labels = np.zeros(size, np.uint8)
    labels[radius < 1.0] = 1
    labels[radius < 0.85] = 2
    for _ in range(3):
        centre = rng.uniform(-0.35, 0.35, 3)
        ball = np.sqrt(sum((a - c) ** 2 for a, c in zip(axes, centre, strict=True)))
        labels[(ball < rng.uniform(0.08, 0.15)) & (labels == 2)] = 3
    means = np.array([0.0, 0.35, 0.7, 1.0], np.float32)
    tilt = rng.normal(0, 0.1, 3)
    bias = 1.0 + sum(t * a for t, a in zip(tilt, axes, strict=True))
    noise = rng.normal(0.0, 0.02, size)
    t1 = (means[labels] * bias + noise * (labels > 0)).astype(np.float32)
    stored = np.dtype(t1_dtype)
    if stored.kind in "iu":
        top = min(int(np.iinfo(stored).max), 4095)
        t1 = np.clip(np.round(t1 / 1.25 * top), 0, top)
    elif stored.kind != "f":
        raise VoxelflowValueError(
            f"phantom: t1_dtype={t1_dtype!r} is neither a floating nor an integer type; "
            "pass 'float32', 'uint8', 'int16' or 'uint16'"
        )
    t1 = t1.astype(stored)
    affine = np.diag([*voxel, 1.0])
    affine[:3, 3] = -voxel * (np.asarray(size) - 1) / 2
    # nibabel images in memory: read as files are (the dtype policy applies), saved as stored.
    subject = Subject(
        t1=ScalarImage(nib.Nifti1Image(t1, affine)),
        seg=LabelMap(nib.Nifti1Image(labels, affine)),
    )
    if directory is None:
        return subject
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in subject.images.items():
        image.save(folder / f"{name}{suffix}")
    return Subject(
        t1=ScalarImage(folder / f"t1{suffix}"),
        seg=LabelMap(folder / f"seg{suffix}"),
    )
