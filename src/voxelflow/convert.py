"""File-to-file conversion that streams: any readable volume to any writable format.

:func:`convert` opens the source lazily and writes the destination slab by
slab along ``K``, so a volume larger than memory converts:

* to ``.nii.zarr``: :func:`~voxelflow.backends.niftizarr_write.write_niftizarr`
  (chunks, shards, codec, pyramid built on the fly);
* to ``.nii``: the header, then each slab straight into the file;
* to anything else (``.nii.gz``, ``.nrrd``, ``.mha``...): the format's writer,
  which needs the whole volume in memory.

Sources are read with region reads (memory-mapped ``.nii``, chunked
``.nii.zarr``, ranged remote reads); a source whose backend has no region
reads (SimpleITK formats, remote ``.nii.gz``) is read whole once. Every output
is written under a temporary name and renamed at the end: an interrupted
conversion leaves nothing that looks complete.
"""

from __future__ import annotations

import os
from typing import Any

import nibabel as nib
import numpy as np

from voxelflow._atomic import atomic_target
from voxelflow._errors import VoxelflowValueError, did_you_mean
from voxelflow._lossless import check_lossless
from voxelflow.backends.niftizarr import is_niftizarr_output, is_remote
from voxelflow.backends.niftizarr_write import SAVE_OPTIONS, SlabSource

#: Options :func:`convert` understands for a ``.nii`` destination.
NIFTI_OPTIONS = ("label", "progress")


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    label: bool | None = None,
    level: int | None = None,
    storage_options: dict[str, Any] | None = None,
    progress: bool | None = None,
    backend: str | None = None,
    **options: Any,
) -> None:
    """Convert ``src`` to ``dst``, streaming slab by slab where the formats allow.

    A conversion the destination's format cannot hold without loss (a 3-D
    volume to ``.png``, float to an 8-bit format, channels dropped) is refused
    before anything is written: see :func:`check_lossless`.

    Args:
        src: path or URI of any readable volume (``s3://``, ``gs://``, ``https://`` too).
        dst: local output path; the format follows the extension.
        label: the data are labels (pyramids use majority votes, never averages).
            Default: the NIfTI intent code says "label", else ``False``.
        level: pyramid level of a ``.nii.zarr`` source to convert.
        storage_options: fsspec options for a remote ``src``.
        progress: show a progress bar (default: only on a terminal).
        backend: read ``src`` with this registered backend (e.g. ``"simpleitk"``
            for an Analyze ``.hdr``/``.img`` pair), not the one its name selects.
        **options: options of the destination's writer; for ``.nii.zarr``:
            ``chunk``, ``shard``, ``codec``, ``compression_level``, ``levels``,
            ``method``, ``zarr_format``. Unknown options raise.

    Example:
        >>> import torch, tempfile, voxelflow as tio
        >>> from voxelflow.convert import convert
        >>> folder = tempfile.mkdtemp()
        >>> tio.ScalarImage(torch.rand(1, 32, 32, 32)).save(f"{folder}/a.nii")
        >>> convert(f"{folder}/a.nii", f"{folder}/a.nii.zarr", chunk=16, levels=2)
        >>> tio.ScalarImage(f"{folder}/a.nii.zarr", level=1).shape
        (1, 16, 16, 16)
    """
    from voxelflow.image import LabelMap, ScalarImage

    src, dst = os.fspath(src), os.fspath(dst)
    if is_remote(dst):
        raise VoxelflowValueError(
            f"{dst}: convert writes local files only; write locally, then upload it"
        )
    if os.path.abspath(src) == os.path.abspath(dst) and not is_remote(src):
        raise VoxelflowValueError(f"{src}: source and destination are the same path")
    extra: dict[str, Any] = {}
    if level is not None:
        extra["level"] = level
    if storage_options is not None:
        extra["storage_options"] = storage_options
    if backend is not None:
        extra["backend"] = backend
    probe = ScalarImage(src, **extra)
    if label is None:
        label = _intent_is_label(probe)
    image = (LabelMap if label else ScalarImage)(src, **extra)
    check_lossless(image, dst)
    if is_niftizarr_output(dst):
        _check_options(dst, options, SAVE_OPTIONS, "NIfTI-Zarr")
        from voxelflow.backends.niftizarr_write import write_niftizarr

        write_niftizarr(image, dst, label=label, progress=progress, **options)
    elif dst.lower().endswith(".nii"):
        _check_options(dst, options, (), "NIfTI (.nii)")
        write_nifti_streaming(image, dst, label=bool(label), progress=progress)
    else:
        image.save(dst, **options)


def _check_options(path: str, options: dict[str, Any], known: tuple[str, ...], kind: str) -> None:
    unknown = sorted(set(options) - set(known))
    if unknown:
        names = ", ".join(known) if known else "none"
        raise VoxelflowValueError(
            f"{path}: option(s) {unknown} do not apply to {kind} output; its options: {names}."
            + did_you_mean(unknown[0], known)
        )


def _intent_is_label(image: Any) -> bool:
    backend = image.dataobj
    header = getattr(backend, "nifti_header", None)
    if header is None and hasattr(backend, "header") and hasattr(backend.header, "path"):
        try:
            header = nib.load(backend.header.path).header
        except Exception:
            header = None
    if header is None:
        return False
    try:
        return header.get_intent()[0] in ("label", "neuronames")
    except Exception:
        return False


def write_nifti_streaming(
    image: Any, path: str, *, label: bool = False, progress: bool | None = None
) -> None:
    """Write an uncompressed ``.nii`` slab by slab along ``K`` (atomic, bounded memory).

    Stored values and header come from the source file when it is a NIfTI or
    NIfTI-Zarr file opened directly (so ``scl_slope``/``scl_inter`` and the
    stored dtype survive); otherwise from the values ``image`` reads.
    """
    from tqdm.auto import tqdm

    source = SlabSource(image, label)
    header = source.header.copy()
    magic = bytes(header["magic"])
    if magic.startswith(b"ni"):  # a .hdr/.img pair header: make it single-file (n+1 / n+2)
        header["magic"] = b"n+" + magic[2:]
    extensions = sum(e.get_sizeondisk() for e in header.extensions)
    offset = int(header.sizeof_hdr) + 4 + extensions
    offset = -(-offset // 16) * 16
    header.set_data_offset(offset)
    file_shape = tuple(int(n) for n in header.get_data_shape())
    dtype = np.dtype(header.get_data_dtype())
    channels, i, j, k = image.shape
    layout = source.layout
    slab = max(1, int(64 * 2**20 // max(1, channels * i * j * dtype.itemsize)))
    with atomic_target(path) as tmp:
        with open(tmp, "wb") as stream:
            header.write_to(stream)
            stream.truncate(offset + int(np.prod(file_shape, dtype=np.int64)) * dtype.itemsize)
        mapped = np.memmap(tmp, dtype=dtype, mode="r+", offset=offset, shape=file_shape, order="F")
        with tqdm(
            total=k,
            unit="slice",
            desc=f"writing {os.path.basename(path)}",
            disable=None if progress is None else not progress,
            leave=False,
        ) as bar:
            for k0 in range(0, k, slab):
                k1 = min(k, k0 + slab)
                data = source.read_cijk(k0, k1)  # (C, I, J, k)
                block = np.moveaxis(data, 0, -1)  # (I, J, k, C)
                block = block.reshape(*block.shape[:3], layout.t, layout.c, order="F")
                mapped[:, :, k0:k1] = block.reshape(mapped[:, :, k0:k1].shape)
                bar.update(k1 - k0)
        mapped.flush()
        del mapped
