"""Everything else (NRRD, MHA/MHD, DICOM series, ...) through SimpleITK.

The header (size, spacing, origin, direction, pixel type) is read with
``ReadImageInformation``, without reading pixels. SimpleITK cannot read a
region of most formats, so **the first read of any region loads the whole
volume once**; it is kept in this backend (per process) so later regions are
free, and dropped by ``Image.unload()``.

SimpleITK works in LPS+ world coordinates and returns arrays as ``(K, J, I)``;
this backend converts to RAS+ and ``(C, I, J, K)`` so that an image read from
``.nrrd`` and from ``.nii`` gives identical arrays and affines.
"""

from __future__ import annotations

import os
from collections.abc import Hashable
from typing import Any

import numpy as np
import torch

from voxelflow._atomic import atomic_target
from voxelflow._errors import (
    VoxelflowFileNotFoundError,
    VoxelflowValueError,
    require,
)
from voxelflow._indexing import Box
from voxelflow.backends.base import Backend, RegionCost, storable, store_into, torch_dtype

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _sitk() -> Any:
    return require("SimpleITK", "Reading this format", "SimpleITK")


def _numpy_dtype(pixel_id: int, components: int) -> np.dtype:
    sitk = _sitk()
    image = (
        sitk.Image([1, 1, 1], pixel_id, components)
        if components > 1
        else sitk.Image([1, 1, 1], pixel_id)
    )
    return sitk.GetArrayViewFromImage(image).dtype


def affine_from_sitk(spacing: Any, origin: Any, direction: Any) -> np.ndarray:
    """RAS+ affine from SimpleITK's LPS+ geometry (3-D part)."""
    direction = np.asarray(direction, dtype=np.float64)
    dim = int(round(np.sqrt(direction.size)))
    rotation = direction.reshape(dim, dim)[:3, :3]
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ rotation @ np.diag(np.asarray(spacing, dtype=np.float64)[:3])
    affine[:3, 3] = LPS_TO_RAS @ np.asarray(origin, dtype=np.float64)[:3]
    return affine


def sitk_geometry(affine: np.ndarray) -> tuple[list[float], list[float], list[float]]:
    """SimpleITK spacing, origin and direction (LPS+) from a RAS+ affine."""
    matrix = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)[:3, :3]
    spacing = np.linalg.norm(matrix, axis=0)
    direction = matrix / spacing
    origin = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)[:3, 3]
    return spacing.tolist(), origin.tolist(), direction.ravel().tolist()


class SimpleITKBackend(Backend):
    """Any format SimpleITK reads; header-only open, full read on first access.

    Example:
        >>> import os, tempfile, torch, voxelflow as tio
        >>> path = os.path.join(tempfile.mkdtemp(), "head.nrrd")
        >>> tio.ScalarImage(torch.rand(1, 20, 16, 12)).save(path)
        >>> image = tio.ScalarImage(path)  # reads only the header
        >>> image.shape, image.dataobj._volume is None
        ((1, 20, 16, 12), True)
        >>> image[:, :10].data.shape  # loads the volume once, then slices it
        torch.Size([1, 10, 16, 12])
    """

    region_cost: RegionCost = "whole"

    path: str

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._files = self._find_files(self.path)
        self._volume: np.ndarray | None = None
        self._read_header()

    # ---------------------------------------------------------------- header
    def _find_files(self, path: str) -> list[str]:
        sitk = _sitk()
        if not os.path.exists(path):
            raise VoxelflowFileNotFoundError(f"{path}: no such file or directory; check the path")
        if os.path.isdir(path):
            series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(path)
            if not series:
                raise VoxelflowValueError(
                    f"{path}: the directory holds no DICOM series; point to an image file or a "
                    "folder of DICOM slices"
                )
            return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(path, series[0]))
        if os.path.getsize(path) == 0:
            raise VoxelflowValueError(
                f"{path}: the file is empty (0 bytes); re-copy or re-export it"
            )
        return [path]

    def _info(self, file: str) -> Any:
        sitk = _sitk()
        reader = sitk.ImageFileReader()
        reader.SetFileName(file)
        try:
            reader.ReadImageInformation()
        except RuntimeError as error:
            first = str(error).strip().splitlines()[-1] if str(error).strip() else ""
            raise VoxelflowValueError(
                f"{file}: SimpleITK cannot read this file's header ({first}); check that the "
                "file is a complete image in a format SimpleITK supports, with the right extension"
            ) from error
        return reader

    def _read_header(self) -> None:
        info = self._info(self._files[0])
        size = list(info.GetSize())
        spacing = list(info.GetSpacing())
        origin = list(info.GetOrigin())
        direction = list(info.GetDirection())
        components = int(info.GetNumberOfComponents())
        if len(self._files) > 1:  # DICOM series: one slice per file
            second = self._info(self._files[1])
            normal = np.asarray(direction, dtype=float).reshape(3, 3)[:, 2]
            step = np.asarray(second.GetOrigin()) - np.asarray(origin)
            spacing[2] = float(abs(np.dot(step, normal))) or spacing[2]
            size[2] = len(self._files)
        if len(size) < 3:
            raise VoxelflowValueError(
                f"{self.path}: a {len(size)}-D image (size {size}); voxelflow reads 3-D volumes; "
                "save it with a third axis of size 1"
            )
        if len(size) > 4 or (len(size) == 4 and components > 1):
            raise VoxelflowValueError(
                f"{self.path}: a {len(size)}-D image with {components} components is not "
                "supported; voxelflow reads 3-D volumes with channels"
            )
        channels = size[3] if len(size) == 4 else components
        self.shape = (channels, size[0], size[1], size[2])
        self.affine = affine_from_sitk(spacing, origin, direction)
        self._numpy_dtype = _numpy_dtype(info.GetPixelID(), components)
        self.dtype = torch_dtype(self._numpy_dtype)

    # ------------------------------------------------------------------ data
    def _load(self) -> np.ndarray:
        if self._volume is None:
            sitk = _sitk()
            try:
                if len(self._files) > 1:
                    reader = sitk.ImageSeriesReader()
                    reader.SetFileNames(self._files)
                    image = reader.Execute()
                else:
                    image = sitk.ReadImage(self._files[0])
            except RuntimeError as error:
                raise VoxelflowValueError(
                    f"{self.path}: SimpleITK failed to read the pixels ({str(error).strip()[-200:]}); "
                    "the file may be truncated or corrupt; re-copy or re-export it"
                ) from error
            array = sitk.GetArrayFromImage(image)  # (K, J, I[, C]) or (T, K, J, I)
            if image.GetDimension() == 4:
                array = array.transpose(0, 3, 2, 1)
            elif image.GetNumberOfComponentsPerPixel() > 1:
                array = array.transpose(3, 2, 1, 0)
            else:
                array = array.transpose(2, 1, 0)[None]
            self._volume = array
        return self._volume

    def release(self) -> None:
        """Drop the decoded volume (``Image.unload()`` calls this)."""
        self._volume = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_volume"] = None
        return state

    @property
    def cache_key(self) -> Hashable:
        stats = [os.stat(f) for f in self._files]
        return (
            "sitk",
            os.path.realpath(self.path),
            tuple((s.st_size, s.st_mtime_ns) for s in stats),
        )

    def read(self, box: Box | None = None) -> torch.Tensor:
        volume = self._load()
        region = volume if box is None else volume[box]
        return torch.from_numpy(np.array(region, copy=True))

    def read_into(self, box: Box | None, out: torch.Tensor) -> None:
        box = self.check_out(box, out)
        volume = self._load()
        store_into(volume if box is None else volume[box], out)

    def describe(self) -> dict[str, Any]:
        files = self._files
        return {
            "format": "DICOM series"
            if len(files) > 1
            else f"SimpleITK ({os.path.splitext(self.path)[1]})",
            "files": len(files),
            "region reads": "no: the first read loads the whole volume once",
            "size on disk": sum(os.path.getsize(f) for f in files),
        }


def is_sitk_source(source: str) -> bool:
    return "://" not in source


def write_sitk(image: Any, path: str, **options: Any) -> None:
    """Write ``image`` with SimpleITK (format from the extension: .nrrd, .mha, .mhd, ...)."""
    sitk = _sitk()
    unknown = set(options) - {"use_compression"}
    if unknown:
        raise VoxelflowValueError(
            f"{path}: unknown option(s) {sorted(unknown)} for SimpleITK formats; known: use_compression"
        )
    array = storable(image.data if image.is_loaded else image.dataobj.read())
    channels = array.shape[0]
    if channels == 1:
        itk = sitk.GetImageFromArray(array[0].transpose(2, 1, 0))
    else:
        itk = sitk.GetImageFromArray(array.transpose(3, 2, 1, 0), isVector=True)
    spacing, origin, direction = sitk_geometry(image.affine)
    itk.SetSpacing(spacing)
    itk.SetOrigin(origin)
    itk.SetDirection(direction)
    compress = bool(options.get("use_compression", False))
    if path.lower().endswith((".mhd", ".nhdr", ".hdr")):
        # Header + data pairs name their data file after the header: no temp name.
        _write(sitk, itk, path, path, compress)
        return
    with atomic_target(path) as tmp:
        _write(sitk, itk, tmp, path, compress)


def _write(sitk: Any, itk: Any, target: str, path: str, compress: bool) -> None:
    try:
        sitk.WriteImage(itk, target, compress)
    except RuntimeError as error:
        raise VoxelflowValueError(
            f"{path}: SimpleITK cannot write this format ({str(error).strip()[-200:]}); use "
            ".nii, .nii.gz, .nii.zarr, .nrrd or .mha"
        ) from error
