"""File-to-file conversion that streams: any readable volume to any writable format.

:func:`convert` opens the source lazily and writes the destination slab by
slab along ``K``, so a volume larger than memory converts:

* to ``.nii.zarr``: :func:`~voxelflow.backends.niftizarr_write.write_niftizarr`
  (chunks, shards, codec, pyramid);
* to ``.nii`` and ``.nii.gz``: :func:`~voxelflow.backends.nifti_write.write_nifti_source`
  (the header, then each slab);
* to anything else (``.nrrd``, ``.mha``...): the format's writer, which needs
  the whole volume in memory.

Sources are read with region reads (memory-mapped ``.nii``, chunked
``.nii.zarr``, ranged remote reads); a source whose backend reads whole
(SimpleITK formats) is read whole once. NIfTI and NIfTI-Zarr sources keep
their raw values, scaling and header (qform/sform codes, units, intent,
description). Every output is written under a temporary name and published at
the end; an existing output is refused unless ``overwrite=True``, and even then
only an image is replaced, never a directory of other files.
"""

from __future__ import annotations

import os
from typing import Any

from voxelflow._errors import VoxelflowValueError, did_you_mean
from voxelflow._lossless import check_lossless
from voxelflow.backends import find_writer
from voxelflow.backends._fsspec import is_remote
from voxelflow.backends.niftizarr import is_niftizarr_output
from voxelflow.backends.niftizarr_write import SAVE_OPTIONS, write_niftizarr
from voxelflow.backends.write_source import source_of

#: Options :func:`convert` understands for a ``.nii`` / ``.nii.gz`` destination.
NIFTI_OPTIONS = ("compresslevel",)


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    label: bool | None = None,
    level: int | None = None,
    storage_options: dict[str, Any] | None = None,
    progress: bool | None = None,
    backend: str | None = None,
    overwrite: bool = False,
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
        overwrite: replace an existing ``dst`` (only an image: a directory or file
            that does not open as one is never replaced). Default: refuse.
        **options: options of the destination's writer; for ``.nii.zarr``:
            ``chunk``, ``shard``, ``codec``, ``compression_level``, ``checksum``,
            ``levels``, ``method``, ``zarr_format``; for ``.nii.gz``:
            ``compresslevel``. Unknown options raise.

    Example:
        >>> import torch, tempfile, voxelflow as tio
        >>> from voxelflow.convert import convert
        >>> folder = tempfile.mkdtemp()
        >>> tio.ScalarImage(torch.rand(1, 32, 32, 32)).save(f"{folder}/a.nii")
        >>> convert(f"{folder}/a.nii", f"{folder}/a.nii.zarr", chunk=16, levels=2)
        >>> tio.ScalarImage(f"{folder}/a.nii.zarr", level=1).shape
        (1, 16, 16, 16)
    """
    from voxelflow.backends.nifti_write import write_nifti_source
    from voxelflow.backends.registry import is_image
    from voxelflow.image import LabelMap, ScalarImage

    src, dst = os.fspath(src), os.fspath(dst)
    if is_remote(dst):
        raise VoxelflowValueError(
            f"{dst}: convert writes local files only; write locally, then upload it"
        )
    if not is_remote(src) and os.path.abspath(src) == os.path.abspath(dst):
        raise VoxelflowValueError(f"{src}: source and destination are the same path")
    nifti_out = dst.lower().endswith((".nii", ".nii.gz"))
    zarr_out = is_niftizarr_output(dst)
    if zarr_out:
        _check_options(dst, options, SAVE_OPTIONS, "NIfTI-Zarr")
    elif nifti_out:
        _check_options(dst, options, NIFTI_OPTIONS, "NIfTI (.nii, .nii.gz)")
    if os.path.lexists(dst):  # refuse before reading anything (the writers check again)
        from voxelflow._atomic import check_target

        check_target(dst, overwrite=overwrite, replaceable=is_image)
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
    source = source_of(image, label)
    if zarr_out:
        write_niftizarr(source, dst, label=label, progress=progress, overwrite=overwrite, **options)
    elif nifti_out:
        write_nifti_source(
            source,
            dst,
            compresslevel=int(options.get("compresslevel", 6)),
            overwrite=overwrite,
            progress=progress,
        )
    else:  # an existing output was checked above: an image, replaced atomically
        find_writer(dst)(image, dst, **options)


def _check_options(path: str, options: dict[str, Any], known: tuple[str, ...], kind: str) -> None:
    unknown = sorted(set(options) - set(known) - {"overwrite", "progress", "label"})
    if unknown:
        names = ", ".join(known) if known else "none"
        raise VoxelflowValueError(
            f"{path}: option(s) {unknown} do not apply to {kind} output; its options: {names}."
            + did_you_mean(unknown[0], known)
        )


def _intent_is_label(image: Any) -> bool:
    """Whether the source's NIfTI header (if it has one) says its values are labels."""
    try:
        return source_of(image, False).header("t").get_intent()[0] in ("label", "neuronames")
    except Exception:
        return False
