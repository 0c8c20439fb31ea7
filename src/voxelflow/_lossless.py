"""Does an output format hold an image whole? Asked of the format itself, with a probe.

:func:`check_lossless` is called by :func:`voxelflow.convert.convert` before it
writes anything, and by ``voxelflow infer`` for its output.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Protocol

import numpy as np

from voxelflow._errors import VoxelflowValueError

if TYPE_CHECKING:
    import torch


class _Volume(Protocol):
    """What :func:`check_lossless` needs to know of an image (an ``Image`` has it)."""

    @property
    def shape(self) -> tuple[int, ...]: ...  # (C, I, J, K)
    @property
    def dtype(self) -> torch.dtype: ...
    @property
    def affine(self) -> np.ndarray: ...


#: Formats to suggest when the requested one loses data: they hold every dtype and channel.
LOSSLESS_FORMATS = (".nii.gz", ".nii.zarr", ".nrrd", ".mha", ".nii")


def check_lossless(image: _Volume, path: str | os.PathLike[str]) -> None:
    """Refuse to write ``image`` to ``path`` when the format cannot hold it whole.

    The check asks the format itself rather than a table: a small probe with
    the image's channels, dtype and affine (``(C, 2, 3, 4)``, distinct values)
    is written to a temporary file of the same name by the writer ``path``
    would use, read back with voxelflow, and compared. Refused when the probe
    cannot be written, does not read back as a 3-D volume, loses channels or
    axes, comes back in a dtype that cannot hold every value of the image's
    (``float32`` to ``uint8``; ``uint8`` to ``uint16`` is fine), changes
    values, or loses the affine. Nothing is written at ``path``.

    Args:
        image: what will be written: its ``shape`` ``(C, I, J, K)``, ``dtype``
            and ``affine`` are used (no voxel is read).
        path: the output path; the format follows the extension.

    Raises:
        VoxelflowValueError: naming ``path``, what would be lost and the fix.

    Example:
        >>> import torch, voxelflow as tio
        >>> from voxelflow.convert import check_lossless
        >>> volume = tio.ScalarImage(torch.rand(1, 8, 8, 8))
        >>> check_lossless(volume, "out.nrrd")  # holds it: nothing raised, nothing written
        >>> check_lossless(volume, "out.png")
        Traceback (most recent call last):
        ...
        voxelflow._errors.VoxelflowValueError: out.png: .png cannot hold this 1-channel float32 ...
    """
    import tempfile

    import torch

    from voxelflow.backends.registry import find_writer, open_backend
    from voxelflow.image import ScalarImage

    path = os.fspath(path)
    channels, *spatial = (int(n) for n in image.shape)
    if min(channels, *spatial) < 1:
        source = getattr(image, "path", None) or "the source"
        raise VoxelflowValueError(
            f"{source}: its header declares a shape of {[channels, *spatial]} (C, I, J, K); every "
            f"size must be 1 or more, so nothing is written to {path}. The header is corrupt: "
            "re-copy or re-export the file"
        )
    # What a conversion writes: the stored values (``stored_dtype``), not ``data``'s dtype
    # (an image read from a uint8 file gives float32 data but writes uint8).
    dtype = getattr(image, "stored_dtype", image.dtype)
    kind = _format_name(path)
    what = (
        f"this {channels}-channel {str(dtype).replace('torch.', '')} volume of "
        f"{'×'.join(map(str, spatial))}"
    )
    others = [name for name in LOSSLESS_FORMATS if name != kind]
    fix = f"write {', '.join(others[:-1])} or {others[-1]} instead, which hold it"
    writer = find_writer(path)
    values = _probe_values(channels, dtype)
    affine = np.asarray(image.affine, dtype=np.float64)
    with tempfile.TemporaryDirectory(prefix="voxelflow-probe-") as folder:
        target = os.path.join(folder, os.path.basename(path.rstrip("/\\")) or "probe")
        try:
            writer(ScalarImage(values, affine=affine), target)
        except Exception as error:
            raise VoxelflowValueError(
                f"{path}: {kind} cannot hold {what}: the writer refuses it "
                f"({_first_line(error)}); {fix}"
            ) from None
        try:
            back = open_backend(target)
            data = back.read()
            back_affine = np.asarray(back.affine, dtype=np.float64)
        except Exception as error:
            raise VoxelflowValueError(
                f"{path}: {kind} cannot hold {what}: {_what_came_back(target, error)}; {fix}"
            ) from None
    lost = []
    if tuple(data.shape) != tuple(values.shape):
        lost.append(_shape_loss(tuple(values.shape), tuple(data.shape)))
    elif not _holds(data.dtype, dtype):
        lost.append(f"precision: it stores {str(data.dtype).replace('torch.', '')}")
    elif not torch.equal(data.to(torch.float64), values.to(torch.float64)):
        lost.append("the values: they come back rescaled or clipped")
    if not np.allclose(back_affine, affine, rtol=1e-5, atol=1e-4):
        lost.append("the orientation, spacing or origin (the affine)")
    if lost:
        raise VoxelflowValueError(
            f"{path}: {kind} cannot hold {what}: it loses {'; '.join(lost)}; {fix}"
        )


def _format_name(path: str) -> str:
    name = os.path.basename(path.rstrip("/\\")).lower()
    for double in (".nii.gz", ".nii.zarr", ".ome.zarr", ".ome.tif", ".ome.tiff"):
        if name.endswith(double):
            return double
    return os.path.splitext(name)[1] or f"{name!r} (no extension)"


def _probe_values(channels: int, dtype: torch.dtype) -> torch.Tensor:
    """``(C, 2, 3, 4)`` distinct values the dtype holds exactly (negatives where signed)."""
    import torch

    count = channels * 24
    steps = torch.arange(count, dtype=torch.float64).reshape(channels, 2, 3, 4)
    if dtype == torch.bool:
        return (steps.to(torch.int64) % 2).to(torch.bool)
    if dtype.is_floating_point:
        return (steps * 0.25 - 1.5).to(dtype)
    info = torch.iinfo(dtype)
    low = max(info.min, -(count // 2))
    span = min(count, info.max - low + 1)
    return (low + steps.to(torch.int64) % span).to(dtype)


def _holds(stored: torch.dtype, wanted: torch.dtype) -> bool:
    """Can ``stored`` represent every value of ``wanted``?"""
    import torch

    if stored == wanted:
        return True
    to_numpy = {torch.bfloat16: np.float32}  # NumPy has no bfloat16; float32 holds it
    numpy_stored = np.dtype(to_numpy.get(stored, torch.empty(0, dtype=stored).numpy().dtype))
    numpy_wanted = np.dtype(to_numpy.get(wanted, torch.empty(0, dtype=wanted).numpy().dtype))
    return bool(np.can_cast(numpy_wanted, numpy_stored, casting="safe"))


def _shape_loss(wrote: tuple[int, ...], read: tuple[int, ...]) -> str:
    parts = []
    if read[0] != wrote[0]:
        parts.append(f"channels: {wrote[0]} written, {read[0]} kept")
    if read[1:] != wrote[1:]:
        parts.append(
            f"axes: a {'×'.join(map(str, wrote[1:]))} probe comes back "
            f"{'×'.join(map(str, read[1:]))}"
        )
    return "; ".join(parts)


def _what_came_back(target: str, error: BaseException) -> str:
    """Describe a probe file voxelflow cannot read back (SimpleITK's view of it if possible)."""
    try:
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(target)
        reader.ReadImageInformation()
        dimension = reader.GetDimension()
        if dimension < 3:
            return f"it keeps a {dimension}-D image (one slice of the volume)"
        return (
            f"it comes back as a {dimension}-D {sitk.GetPixelIDValueAsString(reader.GetPixelID())} image "
            "voxelflow does not read"
        )
    except Exception:
        return f"what it writes does not read back ({_first_line(error)})"


def _first_line(error: BaseException) -> str:
    """The reason in a writer's error: ITK's own sentence when it is one, else the first line."""
    original = error.__cause__ or error
    lines = [
        re.sub(r"^(?:s?itk::ERROR|ITK ERROR):\s*(?:\w+\(0x[0-9a-fA-F]+\):\s*)?", "", line.strip())
        for line in str(original).splitlines()
        if line.strip() and not line.strip().startswith("Exception thrown in SimpleITK")
    ]
    if not lines:
        return type(original).__name__
    if "Unable to determine ImageIO writer" in lines[0]:
        return "SimpleITK has no writer for this extension"
    return lines[0][:200]
