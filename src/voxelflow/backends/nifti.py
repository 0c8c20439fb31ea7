"""NIfTI-1 and NIfTI-2: ``.nii`` through a memory map, ``.nii.gz`` through nibabel.

The header is parsed once, with nibabel, and reduced to a :class:`NiftiHeader`.
Voxel data is then read without nibabel's array proxy:

* ``.nii`` (and ``.img``/``.hdr`` pairs): a NumPy memory map of the file; a
  region read copies just that region (the OS pages in the bytes it touches).
* ``.nii.gz``: a parallel or ISA-L inflate for whole reads, and a persistent
  seek-point index for region reads (:mod:`voxelflow.backends.gzindex`);
  nibabel's ``fileslice`` over the gzip stream when those packages are missing.

Layouts: a 3-D file is one channel; a 4-D file ``(I, J, K, T)`` has ``T``
channels; a 5-D "vector" file ``(I, J, K, T, C)`` has ``T × C`` channels
(``T`` is almost always 1). Scaling (``scl_slope``, ``scl_inter``) is applied
on every read, and ``dtype`` reports the scaled dtype (float32, or float64 when
the file stores float64).
"""

from __future__ import annotations

import contextlib
import gzip
import mmap
import os
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from voxelflow._atomic import atomic_target
from voxelflow._errors import (
    VoxelflowFileNotFoundError,
    VoxelflowValueError,
    check_choice,
    require,
)
from voxelflow._indexing import Box
from voxelflow.backends import gzindex as _gz
from voxelflow.backends.base import (
    Backend,
    apply_scaling,
    is_scaled,
    scaled_dtype,
    torch_dtype,
)
from voxelflow.backends.gzindex import (
    GZ_ACCESS,
    GzAccess,
    IndexedReader,
    StoredIndex,
    ensure_index,
    igzip_module,
    inflate_into,
    load_index,
    plan_spans,
    rapidgzip_module,
)

GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class NiftiHeader:
    """What voxelflow needs from a NIfTI header, in plain types (pickles cleanly).

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

    @property
    def shape(self) -> tuple[int, int, int, int]:
        i, j, k = self.file_shape[:3]
        return (int(np.prod(self.file_shape[3:], dtype=np.int64)), i, j, k)

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
        return int(np.prod(self.file_shape, dtype=np.int64)) * self.raw_dtype.itemsize

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> NiftiHeader:
        """Parse the header of ``path``; reads only the header bytes."""
        path = os.fspath(path)
        _check_file(path)
        try:
            image = nib.load(path)
        except Exception as error:  # nibabel raises many types for bad headers
            raise VoxelflowValueError(_bad_header_message(path, error)) from error
        if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image | nib.Nifti1Pair):
            raise VoxelflowValueError(
                f"{path}: nibabel reads it as {type(image).__name__}, not NIfTI; give the file "
                "its real extension or open it with backend='simpleitk'"
            )
        header = image.header
        file_shape = tuple(int(n) for n in header.get_data_shape())
        if len(file_shape) < 3:
            raise VoxelflowValueError(
                f"{path}: a {len(file_shape)}-D image (shape {file_shape}); voxelflow reads 3-D "
                "volumes with optional channels; save it with a third axis of size 1"
            )
        if len(file_shape) > 5:
            raise VoxelflowValueError(
                f"{path}: a {len(file_shape)}-D image (shape {file_shape}); voxelflow reads 3-D, "
                "4-D (channels as time) and 5-D vector images; split the extra axes into files"
            )
        raw_dtype = header.get_data_dtype()
        if raw_dtype.fields is not None or raw_dtype.kind not in "biufc":
            raise VoxelflowValueError(
                f"{path}: voxel type {raw_dtype} (e.g. RGB) is not supported; convert it to "
                "separate channels of a numeric type"
            )
        # nibabel moves scl_slope/scl_inter from the header into the proxy on load.
        proxy: Any = image.dataobj
        slope, inter = getattr(proxy, "slope", None), getattr(proxy, "inter", None)
        data_path = image.file_map["image"].filename or path
        return cls(
            path=path,
            data_path=os.fspath(data_path),
            file_shape=file_shape,
            raw_dtype=raw_dtype,
            offset=int(proxy.offset),  # the proxy fixes vox_offset=0 in old files
            slope=None if slope is None else float(slope),
            inter=None if inter is None else float(inter),
            affine=np.asarray(image.affine, dtype=np.float64),
            version=2 if isinstance(image, nib.Nifti2Image) else 1,
        )


def _check_file(path: str) -> None:
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


def _gzip_head_broken(path: str) -> bool:
    """Whether the first bytes of a ``.gz`` (where a NIfTI header lives) fail to inflate."""
    if not path.lower().endswith(".gz"):
        return False
    try:
        with gzip.open(path, "rb") as stream:
            stream.read(544)  # a NIfTI-2 header and its extension flag
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


class NiftiBackend(Backend):
    """An uncompressed ``.nii`` file (or ``.hdr``/``.img`` pair), read through a memory map.

    Example:
        >>> import voxelflow as tio
        >>> image = tio.ScalarImage(tio.datasets.nibabel_file("anatomical.nii"))
        >>> image.dataobj[:, 10:12, 20:23, 5].shape
        torch.Size([1, 2, 3, 1])
    """

    path: str

    def __init__(self, path: str | os.PathLike[str], header: NiftiHeader | None = None) -> None:
        self.header = header or NiftiHeader.read(path)
        self.path = self.header.path
        self.shape = self.header.shape
        self.affine = self.header.affine
        self.dtype = torch_dtype(self.header.dtype)
        self._check_size()
        self._memmap: np.memmap | None = None

    def _check_size(self) -> None:
        needed = self.header.offset + self.header.data_nbytes
        size = os.path.getsize(self.header.data_path)
        if size < needed:
            raise VoxelflowValueError(
                f"{self.header.data_path}: the file is truncated: the header describes "
                f"{self.header.data_nbytes} bytes of voxel data from byte {self.header.offset}, "
                f"but the file has {size} bytes; re-copy or re-export it"
            )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_memmap"] = None  # a memory map is per process; reopened on first read
        return state

    def _map(self) -> np.memmap:
        if self._memmap is None:
            self._check_size()  # the file may have shrunk since the header was read
            self._memmap = np.memmap(
                self.header.data_path,
                dtype=self.header.raw_dtype,
                mode="r",
                offset=self.header.offset,
                shape=self.header.flat_shape,
                order="F",
            )
        return self._memmap

    def read_raw(self, box: Box | None) -> np.ndarray:
        """The stored (unscaled) values of ``box`` as an ``(I, J, K, C)`` view or array."""
        mapped = self._map()
        if box is None:
            return mapped
        channels, i, j, k = box
        return mapped[i, j, k, channels]

    def read(self, box: Box | None = None) -> torch.Tensor:
        header = self.header
        if box is None and type(self).read_raw is NiftiBackend.read_raw:
            # A whole read goes through the file, not the map: one copy, and no
            # file-backed pages left mapped (the map would double the RSS).
            raw = self._read_file()
            if raw.dtype == header.dtype:  # native and already the output dtype
                data = _scale_in_place(raw, header.slope, header.inter)
            else:
                data = apply_scaling(raw, header.slope, header.inter, header.dtype)
            return torch.from_numpy(data).permute(3, 0, 1, 2)
        raw = self.read_raw(box)
        data = apply_scaling(raw, header.slope, header.inter, header.dtype)
        if box is not None and self._memmap is not None:
            self._drop_pages(box)
        return torch.from_numpy(data).permute(3, 0, 1, 2)

    def _read_file(self) -> np.ndarray:
        """All stored values, read with ``readinto`` into a new ``(I, J, K, C)`` F-ordered array."""
        header = self.header
        out = np.empty(header.flat_shape, dtype=header.raw_dtype, order="F")
        view = memoryview(out.reshape(-1, order="A")).cast("B")  # type: ignore[arg-type]
        with open(header.data_path, "rb", buffering=0) as file:  # straight into ``out``
            file.seek(header.offset)
            done = 0
            while done < len(view):
                count = file.readinto(view[done:])
                if not count:
                    raise VoxelflowValueError(
                        f"{header.data_path}: the file ended after {done} of "
                        f"{header.data_nbytes} bytes of voxel data; re-copy or re-export it"
                    )
                done += count
        return out

    def _drop_pages(self, box: Box) -> None:
        """Unmap the pages a region read touched (``MADV_DONTNEED`` over its byte span).

        The pages stay in the page cache, but leave the process's RSS, which would
        otherwise grow towards the file's size as random regions are read (the
        kernel maps whole folios around each fault, often megabytes per read).
        """
        advise = getattr(getattr(self._memmap, "_mmap", None), "madvise", None)
        if advise is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        channels, i, j, k = box
        strides = np.cumprod((1, *self.header.flat_shape[:3]))
        first = sum(s.start * n for s, n in zip((i, j, k, channels), strides, strict=True))
        last = sum((s.stop - 1) * n for s, n in zip((i, j, k, channels), strides, strict=True))
        itemsize = self.header.raw_dtype.itemsize
        base = self.header.offset % mmap.ALLOCATIONGRANULARITY  # where np.memmap's data begins
        start = base + int(first) * itemsize
        stop = base + (int(last) + 1) * itemsize
        start -= start % mmap.PAGESIZE
        with contextlib.suppress(OSError, ValueError):  # advice only: never fail a read
            advise(mmap.MADV_DONTNEED, start, stop - start)

    def describe(self) -> dict[str, Any]:
        header = self.header
        return {
            "format": f"NIfTI-{header.version}" + (" (gzip)" if self.path.endswith(".gz") else ""),
            "stored dtype": str(header.raw_dtype),
            "scaling": (
                f"slope={header.slope}, inter={header.inter}"
                if header.dtype != header.raw_dtype.newbyteorder("=")
                else "none"
            ),
            "size on disk": os.path.getsize(self.path),
        }


class NiftiGzBackend(NiftiBackend):
    """A gzip-compressed ``.nii.gz``: fast whole reads and indexed region reads.

    Whole reads inflate with a parallel (rapidgzip) or ISA-L decoder straight
    into one array. Region reads follow ``gz_access`` (see
    :mod:`voxelflow.backends.gzindex` for the policy and its measured
    trade-off): ``"auto"`` (default) decodes small volumes once and reads big
    ones through a seek-point index kept beside the file (or in the cache
    directory), switching to one cached decode once many regions were read;
    ``"index"`` always uses the index; ``"decode"`` always decodes once and
    slices. A cached decode is dropped by ``Image.unload()`` and on pickling.
    Without rapidgzip and isal every read goes through nibabel's stream reader,
    with the same values.

    Args:
        path: the ``.nii.gz`` file.
        header: its parsed header, if already read.
        gz_access: ``"auto"``, ``"index"`` or ``"decode"``.
        gz_threads: decoder threads for whole reads and index builds (default:
            the usable cores, 1 inside a DataLoader worker).
        gz_index_spacing: compressed bytes between seek points of a newly built
            index (default 4 MiB; smaller gives cheaper seeks and a bigger index).

    Example:
        >>> import voxelflow as tio
        >>> image = tio.ScalarImage(tio.datasets.nibabel_file("example4d.nii.gz"),
        ...                         backend_options={"gz_access": "decode"})
        >>> image.dataobj[:, 10:12, 20:23, 5].shape
        torch.Size([2, 2, 3, 1])
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        header: NiftiHeader | None = None,
        *,
        gz_access: GzAccess = "auto",
        gz_threads: int | None = None,
        gz_index_spacing: int = _gz.CHUNK_SIZE,
    ) -> None:
        super().__init__(path, header)
        self.gz_access: GzAccess = check_choice("gz_access", gz_access, GZ_ACCESS)  # type: ignore[assignment]
        if gz_threads is not None and (not isinstance(gz_threads, int) or gz_threads < 1):
            raise VoxelflowValueError(
                f"{self.path}: gz_threads={gz_threads!r}; pass a positive integer or None"
            )
        self.gz_threads = gz_threads
        if not isinstance(gz_index_spacing, int) or gz_index_spacing < 4096:
            raise VoxelflowValueError(
                f"{self.path}: gz_index_spacing={gz_index_spacing!r}; pass a byte count >= 4096"
            )
        self.gz_index_spacing = gz_index_spacing
        self._decoded: np.ndarray | None = None  # stored values, (I, J, K, C) F-ordered
        self._reader: IndexedReader | None = None
        self._index: StoredIndex | None = None
        self._inflated = 0  # bytes inflated by indexed reads since the last decode
        self._lock = threading.RLock()

    def _check_size(self) -> None:  # the uncompressed size is known only after inflating
        return None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_memmap=None, _decoded=None, _lock=None, _inflated=0)
        return state  # the index reader pickles its index bytes, never its decoder

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    # ---------------------------------------------------------------- public
    def release(self) -> None:
        """Drop the cached decode (``Image.unload()`` calls this)."""
        with self._lock:
            self._decoded = None
            self._inflated = 0
        _gz.DECODE_CACHE.forget(self)

    @property
    def index_location(self) -> str | None:
        """Where this file's seek-point index is stored, once it was loaded or built."""
        return None if self._index is None else self._index.location

    def build_index(self, *, force: bool = False) -> StoredIndex:
        """Load, or build and store, the seek-point index now (``voxelflow index``)."""
        with self._lock:
            if rapidgzip_module() is None:
                require("rapidgzip", "a seek-point index of a .nii.gz", "rapidgzip")
            header = self.header
            self._index = ensure_index(
                header.data_path,
                needed=header.offset + header.data_nbytes,
                threads=self.gz_threads,
                spacing=self.gz_index_spacing,
                force=force,
            )
            if self._reader is not None:
                self._reader.close()
            self._reader = IndexedReader(
                header.data_path, self._index.payload, self.gz_index_spacing
            )
            return self._index

    def read(self, box: Box | None = None) -> torch.Tensor:
        header = self.header
        if box is None and self._decoded is None and self._fast_whole():
            raw = self._inflate_whole()
            if raw.dtype == header.dtype and raw.dtype.isnative:
                data = _scale_in_place(raw, header.slope, header.inter)  # scaled once, no copy
            else:
                data = apply_scaling(raw, header.slope, header.inter, header.dtype)
            return torch.from_numpy(data).permute(3, 0, 1, 2)
        return super().read(box)

    def read_raw(self, box: Box | None) -> np.ndarray:
        with self._lock:
            decoded = self._decoded
            if decoded is None and box is not None and self._should_decode():
                decoded = self._decode_and_cache()
        if decoded is not None:
            _gz.DECODE_CACHE.touch(self)
            if box is None:
                return decoded
            channels, i, j, k = box
            return decoded[i, j, k, channels]
        if box is None:
            return self._inflate_whole() if self._fast_whole() else self._read_nibabel(None)
        if self.gz_access != "decode" and rapidgzip_module() is not None:
            return self._read_indexed(box)
        return self._read_nibabel(box)

    def describe(self) -> dict[str, Any]:
        facts = super().describe()
        facts["gzip access"] = self.gz_access if self._fast_whole() else "nibabel (fallback)"
        found = load_index(self.header.data_path) if rapidgzip_module() is not None else None
        facts["seek-point index"] = found[1] if found is not None else "not built"
        return facts

    # ---------------------------------------------------------------- policy
    def _fast_whole(self) -> bool:
        return rapidgzip_module() is not None or igzip_module() is not None

    def _should_decode(self) -> bool:
        if not self._fast_whole():
            return False
        nbytes = self.header.data_nbytes
        if self.gz_access == "decode":
            return _gz.DECODE_CACHE.admit(self, nbytes, force=True)
        if self.gz_access == "index" and rapidgzip_module() is not None:
            return False
        small = nbytes <= _gz.SMALL_VOLUME
        enough = self._inflated >= _gz.DECODE_AFTER * nbytes
        if small or enough or rapidgzip_module() is None:
            return _gz.DECODE_CACHE.admit(self, nbytes)
        return False

    def _decode_and_cache(self) -> np.ndarray:
        decoded = self._inflate_whole()
        self._decoded = decoded
        return decoded

    # ---------------------------------------------------------------- reading
    def _inflate_whole(self) -> np.ndarray:
        header = self.header
        buffer = np.empty(header.data_nbytes, dtype=np.uint8)
        inflate_into(header.data_path, header.offset, buffer, threads=self.gz_threads)
        return buffer.view(header.raw_dtype).reshape(header.flat_shape, order="F")

    def _indexed_reader(self) -> IndexedReader:
        stale = self._index is not None and not self._index.fingerprint.same_stat(
            self.header.data_path
        )
        if self._reader is None or stale:
            self.build_index(force=False)
        assert self._reader is not None
        return self._reader

    def _read_indexed(self, box: Box) -> np.ndarray:
        header = self.header
        size_i, size_j, size_k, _ = header.flat_shape
        channels, i, j, k = box
        cs = np.arange(channels.start, channels.stop, channels.step, dtype=np.int64)
        ks = np.arange(k.start, k.stop, k.step, dtype=np.int64)
        js = np.arange(j.start, j.stop, j.step, dtype=np.int64)
        # F order: row (j, k, c) of length I starts at element ((c * K + k) * J + j) * I.
        rows = ((cs[:, None, None] * size_k + ks[None, :, None]) * size_j + js).reshape(-1)
        itemsize = header.raw_dtype.itemsize
        row_bytes = size_i * itemsize
        out = np.empty((rows.size, len(range(i.start, i.stop, i.step))), dtype=header.raw_dtype)
        with self._lock:
            reader = self._indexed_reader()
            compressed = os.path.getsize(header.data_path)
            ratio = (header.offset + header.data_nbytes) / max(1, compressed)
            seek_cost = int(self.gz_index_spacing * ratio / 2)  # mean inflate from a seek point
            for span in plan_spans(rows, row_bytes, _gz.MERGE_GAP, _gz.MAX_SPAN):
                count = span.last_row - span.first_row + 1
                data = reader.read_at(header.offset + span.first_row * row_bytes, count * row_bytes)
                block = data.view(header.raw_dtype).reshape(count, size_i)
                wanted = rows[span.first_wanted : span.stop_wanted] - span.first_row
                out[span.first_wanted : span.stop_wanted] = block[wanted, i]
                self._inflated += count * row_bytes + seek_cost
        shape = (len(cs), len(ks), len(js), out.shape[1])
        return out.reshape(shape).transpose(3, 2, 1, 0)  # (I, J, K, C), F-ordered

    def _read_nibabel(self, box: Box | None) -> np.ndarray:
        from nibabel.fileslice import fileslice
        from nibabel.openers import ImageOpener

        header = self.header
        key = (slice(None),) * 4 if box is None else (box[1], box[2], box[3], box[0])
        try:
            with ImageOpener(header.data_path, "rb") as stream:
                raw = fileslice(
                    stream, key, header.flat_shape, header.raw_dtype, header.offset, "F"
                )
        except (EOFError, zlib.error, gzip.BadGzipFile, OSError, ValueError) as error:
            raise VoxelflowValueError(
                f"{header.data_path}: the compressed data is truncated or corrupt "
                f"({type(error).__name__}: {error}); re-copy or re-export the file"
            ) from error
        return np.asarray(raw)


def _scale_in_place(array: np.ndarray, slope: float | None, inter: float | None) -> np.ndarray:
    """:func:`apply_scaling` on an array already of the scaled dtype (same operations)."""
    if not is_scaled(slope, inter):
        return array
    dtype = array.dtype
    if slope is not None and np.isfinite(slope) and slope not in (0, 1):
        array *= dtype.type(slope)
    if inter is not None and np.isfinite(inter) and inter != 0:
        array += dtype.type(inter)
    return array


def is_nifti_path(source: str) -> bool:
    name = source.lower()
    return name.endswith((".nii", ".img", ".hdr")) and "://" not in source


def is_nifti_gz_path(source: str) -> bool:
    name = source.lower()
    return name.endswith((".nii.gz", ".img.gz", ".hdr.gz")) and "://" not in source


# -------------------------------------------------------------------- writing
def nifti_array(data: torch.Tensor) -> np.ndarray:
    """``(C, I, J, K)`` tensor → NIfTI array: ``(I, J, K)`` or ``(I, J, K, C)``."""
    tensor = data.detach().cpu()
    if tensor.dtype == torch.bfloat16 or tensor.dtype == torch.float16:
        tensor = tensor.float()
    if tensor.dtype == torch.bool:
        tensor = tensor.to(torch.uint8)
    array = tensor.numpy()
    array = np.moveaxis(array, 0, -1)
    return array[..., 0] if array.shape[-1] == 1 else array


def write_nifti(image: Any, path: str, **options: Any) -> None:
    """Write ``image`` to ``path`` (``.nii`` or ``.nii.gz``) with its affine.

    Reads the data without caching it in ``image``. Options: ``dtype`` (a NumPy
    dtype to store), ``compresslevel`` for ``.nii.gz``.
    """
    unknown = set(options) - {"dtype", "compresslevel"}
    if unknown:
        raise VoxelflowValueError(
            f"{path}: unknown NIfTI save option(s) {sorted(unknown)}; known: dtype, compresslevel"
        )
    array = nifti_array(image.data if image.is_loaded else image.dataobj.read())
    if options.get("dtype") is not None:
        array = array.astype(options["dtype"])
    nifti = nib.Nifti1Image(array, image.affine)
    nifti.set_qform(image.affine, code=1)
    nifti.set_sform(image.affine, code=1)
    if nifti.header.get_xyzt_units() == ("unknown", "unknown"):
        nifti.header.set_xyzt_units("mm", "sec")
    with atomic_target(path) as tmp:
        if path.lower().endswith(".gz"):
            level = int(options.get("compresslevel", 6))
            with gzip.open(tmp, "wb", compresslevel=level) as stream:
                nifti.to_stream(stream)  # type: ignore[attr-defined]
        else:
            with open(tmp, "wb") as stream:
                nifti.to_stream(stream)  # type: ignore[attr-defined]


def is_nifti_output(path: str) -> bool:
    return path.lower().endswith((".nii", ".nii.gz")) and "://" not in path


def suffix(path: str | Path) -> str:
    name = str(path).lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix
