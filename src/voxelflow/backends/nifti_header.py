"""NIfTI-1 and NIfTI-2 headers: recognising, parsing and validating them, once.

Owns :class:`NiftiHeader` (what voxelflow needs from a header, in plain types
that pickle cleanly, plus the nibabel header for writers that keep it), the
one way header bytes are recognised (:func:`parse_header_bytes`: either
version, either byte order; used for remote objects and NIfTI-Zarr stores),
and the checks that refuse impossible headers before anything is allocated:
dims in 64-bit integers (never wrapped), no zero or negative dims, a data size
a file of this size can hold.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import math
import os
import zlib
from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np

from voxelflow._errors import VoxelflowFileNotFoundError, VoxelflowValueError
from voxelflow.backends.base import scaled_dtype

NiftiHeaderType = nib.Nifti1Header | nib.Nifti2Header
GZIP_MAGIC = b"\x1f\x8b"
#: Bytes that hold either header version and the extension flag.
HEADER_PROBE = 544
#: Deflate cannot compress better than about 1032:1: a ``.gz`` this many times smaller
#: than its declared data cannot hold it.
MAX_DEFLATE_RATIO = 1032
#: Bytes of voxel data a header may declare (beyond this, a dim is surely corrupt).
MAX_DATA_BYTES = 1 << 62


@dataclass(frozen=True)
class NiftiHeader:
    """What voxelflow needs from a NIfTI header, in plain types (pickles cleanly).

    ``nifti`` is the nibabel header itself (for writers that keep its codes,
    units, intent and description).

    Example:
        >>> import voxelflow as tio
        >>> from voxelflow.backends import NiftiHeader
        >>> header = NiftiHeader.read(tio.datasets.nibabel_file("functional.nii"))
        >>> header.shape, header.raw_dtype.name, header.dtype.name  # scaled int16 reads as float32
        ((20, 17, 21, 3), 'int16', 'float32')
    """

    path: str
    data_path: str
    file_shape: tuple[int, ...]
    raw_dtype: np.dtype
    offset: int
    slope: float | None
    inter: float | None
    affine: np.ndarray
    version: int
    nifti: NiftiHeaderType | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        i, j, k = self.file_shape[:3]
        return (math.prod(self.file_shape[3:]), i, j, k)

    @property
    def flat_shape(self) -> tuple[int, int, int, int]:
        """The file's array as ``(I, J, K, C)`` in Fortran order."""
        channels, i, j, k = self.shape
        return (i, j, k, channels)

    @property
    def dtype(self) -> np.dtype:
        return scaled_dtype(self.raw_dtype, self.slope, self.inter)

    @property
    def data_nbytes(self) -> int:
        return math.prod(self.file_shape) * self.raw_dtype.itemsize

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> NiftiHeader:
        """Parse the header of a local file; reads only the header bytes."""
        path = os.fspath(path)
        check_file(path)
        _check_head(path)
        try:
            image = nib.load(path)
        except Exception as error:  # nibabel raises many types for bad headers
            raise VoxelflowValueError(_bad_header_message(path, error)) from error
        if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image | nib.Nifti1Pair):
            raise VoxelflowValueError(
                f"{path}: nibabel reads it as {type(image).__name__}, not NIfTI; give the file "
                "its real extension or open it with backend='simpleitk'"
            )
        # nibabel moves scl_slope/scl_inter from the header into the proxy on load.
        proxy: Any = image.dataobj
        data_path = os.fspath(image.file_map["image"].filename or path)
        header = cls.from_nibabel(
            image.header,
            path,
            data_path=data_path,
            offset=int(proxy.offset),  # the proxy fixes vox_offset=0 in old files
            slope=getattr(proxy, "slope", None),
            inter=getattr(proxy, "inter", None),
            affine=image.affine,
        )
        if not data_path.lower().endswith(".gz"):
            header.check_size(os.path.getsize(data_path))
        else:
            header.check_compressed_size(os.path.getsize(data_path))
        return header

    @classmethod
    def from_nibabel(
        cls,
        nifti: NiftiHeaderType,
        path: str,
        *,
        data_path: str | None = None,
        offset: int | None = None,
        slope: float | None = None,
        inter: float | None = None,
        affine: np.ndarray | None = None,
    ) -> NiftiHeader:
        """Validate a nibabel header and reduce it (``slope``/``inter``: from the header
        when not given)."""
        file_shape = check_dims(nifti, path)
        raw_dtype = nifti.get_data_dtype()
        if raw_dtype.fields is not None or raw_dtype.kind not in "biufc":
            raise VoxelflowValueError(
                f"{path}: voxel type {raw_dtype} (e.g. RGB) is not supported; convert it to "
                "separate channels of a numeric type"
            )
        if slope is None and inter is None:
            slope, inter = nifti.get_slope_inter()
        if affine is None:
            affine = nifti.get_best_affine()
        return cls(
            path=path,
            data_path=data_path or path,
            file_shape=file_shape,
            raw_dtype=np.dtype(raw_dtype),
            offset=int(nifti.get_data_offset()) if offset is None else int(offset),
            slope=None if slope is None else float(slope),
            inter=None if inter is None else float(inter),
            affine=np.asarray(affine, dtype=np.float64),
            version=2 if isinstance(nifti, nib.Nifti2Header) else 1,
            nifti=nifti,
        )

    def check_size(self, size: int, *, fix: str = "re-copy or re-export it") -> None:
        """Refuse a file of ``size`` bytes that cannot hold the data the header describes."""
        needed = self.offset + self.data_nbytes
        if size < needed:
            raise VoxelflowValueError(
                f"{self.data_path}: the file is truncated: the header describes "
                f"{self.data_nbytes} bytes of voxel data from byte {self.offset}, "
                f"but the file has {size} bytes; {fix}"
            )

    def check_compressed_size(self, size: int) -> None:
        """Refuse a ``.gz`` of ``size`` bytes too small to inflate to the declared data."""
        needed = self.offset + self.data_nbytes
        if needed > size * MAX_DEFLATE_RATIO + 65536:
            raise VoxelflowValueError(
                f"{self.data_path}: the header describes {self.data_nbytes} bytes of voxel data "
                f"(dims {self.file_shape}), more than a {size}-byte gzip stream can hold; the "
                "header is corrupt or the file truncated; re-copy or re-export it"
            )


def check_dims(nifti: NiftiHeaderType, where: str) -> tuple[int, ...]:
    """The data shape of a header, validated in Python integers (no wrap-around)."""
    dim = [int(d) for d in np.asarray(nifti["dim"]).tolist()]
    ndim = dim[0]
    if not 1 <= ndim <= 7:
        raise VoxelflowValueError(
            f"{where}: the header's dim[0] is {ndim}, not a number of dimensions (1-7); the "
            "header is corrupt; re-copy or re-export the file"
        )
    shape = tuple(dim[1 : ndim + 1])
    bad = [n for n in shape if n < 1]
    if bad:
        raise VoxelflowValueError(
            f"{where}: the header's dims {shape} include {bad[0]}; every dim must be at "
            "least 1; the header is corrupt; re-copy or re-export the file"
        )
    if len(shape) < 3:
        raise VoxelflowValueError(
            f"{where}: a {len(shape)}-D image (shape {shape}); voxelflow reads 3-D "
            "volumes with optional channels; save it with a third axis of size 1"
        )
    if len(shape) > 5:
        raise VoxelflowValueError(
            f"{where}: a {len(shape)}-D image (shape {shape}); voxelflow reads 3-D, "
            "4-D (channels as time) and 5-D vector images; split the extra axes into files"
        )
    nbytes = math.prod(shape) * max(1, int(nifti["bitpix"]) // 8)
    if nbytes > MAX_DATA_BYTES:
        raise VoxelflowValueError(
            f"{where}: the header's dims {shape} describe {nbytes} bytes of voxel data, more "
            "than any file holds; the header is corrupt; re-copy or re-export the file"
        )
    return shape


def parse_header_bytes(raw: bytes, where: str) -> NiftiHeaderType:
    """Recognise and parse a binary NIfTI-1 or NIfTI-2 header (either byte order).

    Example:
        >>> import nibabel as nib, numpy as np
        >>> from voxelflow.backends.nifti_header import parse_header_bytes
        >>> raw = nib.Nifti2Image(np.zeros((2, 3, 4), np.int16), np.eye(4)).header.binaryblock
        >>> type(parse_header_bytes(raw, "x")).__name__
        'Nifti2Header'
    """
    sizes = set()
    if len(raw) >= 4:
        sizes = {int(np.frombuffer(raw[:4], "<i4")[0]), int(np.frombuffer(raw[:4], ">i4")[0])}
    klass: type[nib.Nifti1Header] | type[nib.Nifti2Header]
    if 348 in sizes:
        klass, need = nib.Nifti1Header, 348
    elif 540 in sizes:
        klass, need = nib.Nifti2Header, 540
    else:
        raise VoxelflowValueError(
            f"{where}: not a NIfTI header ({len(raw)} bytes; sizeof_hdr is neither 348 nor "
            "540); check the path, or give the data its real extension"
        )
    if len(raw) < need:
        raise VoxelflowValueError(
            f"{where}: the header is truncated ({len(raw)} of {need} bytes); re-copy or "
            "re-export it"
        )
    try:
        return klass.from_fileobj(io.BytesIO(raw[:need]), check=False)
    except Exception as error:
        raise VoxelflowValueError(f"{where}: unreadable NIfTI header ({error})") from error


def check_file(path: str) -> None:
    """Refuse a missing, empty or misnamed (gzip vs not) local file before parsing it."""
    if not os.path.exists(path):
        raise VoxelflowFileNotFoundError(f"{path}: no such file; check the path")
    if os.path.isdir(path):
        raise VoxelflowValueError(f"{path}: is a directory, not a NIfTI file")
    if os.path.getsize(path) == 0:
        raise VoxelflowValueError(f"{path}: the file is empty (0 bytes); re-copy or re-export it")
    with open(path, "rb") as file:
        magic = file.read(2)
    compressed = path.endswith(".gz")
    if magic == GZIP_MAGIC and not compressed:
        raise VoxelflowValueError(
            f"{path}: the file is gzip-compressed but its name does not end in .gz; "
            "rename it to .nii.gz"
        )
    if compressed and magic != GZIP_MAGIC:
        raise VoxelflowValueError(
            f"{path}: the name ends in .gz but the file is not gzip-compressed; "
            "rename it to .nii (without .gz)"
        )


def _check_head(path: str) -> None:
    """Validate the dims of a single-file header before nibabel interprets them."""
    name = path.lower()
    if not name.endswith((".nii", ".nii.gz", ".hdr", ".hdr.gz")):
        return
    try:
        if name.endswith(".gz"):
            with gzip.open(path, "rb") as stream:
                raw = stream.read(HEADER_PROBE)
        else:
            with open(path, "rb") as file:
                raw = file.read(HEADER_PROBE)
        nifti = parse_header_bytes(raw, path)
    except (VoxelflowValueError, EOFError, zlib.error, gzip.BadGzipFile, OSError):
        return  # nibabel's reading gives the precise message
    check_dims(nifti, path)


def _gzip_head_broken(path: str) -> bool:
    """Whether the first bytes of a ``.gz`` (where a NIfTI header lives) fail to inflate."""
    if not path.lower().endswith(".gz"):
        return False
    try:
        with gzip.open(path, "rb") as stream:
            stream.read(HEADER_PROBE)
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError):
        return True
    return False


def _bad_header_message(path: str, error: Exception) -> str:
    if isinstance(error, EOFError | zlib.error | gzip.BadGzipFile) or _gzip_head_broken(path):
        return f"{path}: the file is truncated or corrupt ({error}); re-copy or re-export it"
    return (
        f"{path}: not a readable NIfTI header ({type(error).__name__}: {error}); if the file is "
        "another format, give it its real extension, or open it with backend='simpleitk'"
    )
