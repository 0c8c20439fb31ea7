"""Accumulating patches into a ``.nii.zarr`` on disk, with bounded memory.

:class:`DiskAccumulator` holds only the *open* slabs of the output: slabs of
whole chunks along ``k`` (the zarr array is stored ``(C, K, J, I)``, the
NIfTI-Zarr order, so a slab is a run of whole chunks). Patches arrive in grid
order (``k`` never decreases); when a patch starts at ``k``, every slab that
ends at or before ``k`` can receive nothing more: it is divided by its summed
weights, optionally turned into labels (argmax), written, and dropped. Memory
stays at a few slabs whatever the volume's size (:attr:`DiskAccumulator.memory_bound`).

The output is written under a temporary name beside the target and renamed on
:meth:`DiskAccumulator.finish` (:func:`voxelflow._atomic.atomic_target`), so an
interrupted run never leaves a file that looks complete.

The layout is NIfTI-Zarr (``nifti-zarr`` 0.x, OME-Zarr 0.5 on Zarr v3): a group
whose array ``"0"`` holds the voxels as ``(z, y, x)`` or ``(c, z, y, x)``, whose
attributes hold the OME ``multiscales`` (one level), and whose array
``"nifti"`` holds the binary NIfTI header (with the JNIfTI fields as its
attributes). It is read back by the reference reader (``niizarr.zarr2nii``).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections.abc import Sequence
from typing import Any

import nibabel as nib
import numpy as np
import torch

from voxelflow._atomic import atomic_target
from voxelflow._errors import VoxelflowRuntimeError, VoxelflowValueError

DEFAULT_CHUNK = 64


def label_dtype(num_classes: int) -> torch.dtype:
    """The smallest integer dtype that holds ``num_classes`` labels."""
    return torch.uint8 if num_classes <= 256 else torch.int16


def nifti_header(
    spatial_shape: Sequence[int],
    channels: int,
    dtype: np.dtype[Any],
    affine: np.ndarray,
    *,
    label: bool = False,
) -> nib.Nifti1Header | nib.Nifti2Header:
    """A NIfTI header for a ``(C, I, J, K)`` volume; channels go on the 5th axis (vectors)."""
    large = any(n > 32767 for n in (*spatial_shape, channels))
    header = nib.Nifti2Header() if large else nib.Nifti1Header()
    shape = tuple(spatial_shape) if channels == 1 else (*spatial_shape, 1, channels)
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    header.set_xyzt_units("mm", "sec")
    if label:
        header.set_intent("label")
    elif channels > 1:
        header.set_intent("vector")
    return header


def _jnifti_fields(header: nib.Nifti1Header, affine: np.ndarray) -> dict[str, Any]:
    """The JNIfTI fields the reference writer stores as the ``nifti`` array's attributes."""
    dims = [int(d) for d in header.get_data_shape()]
    zooms = [float(z) for z in header.get_zooms()]
    return {
        "NIIHeaderSize": int(header["sizeof_hdr"]),
        "Dim": dims,
        "DataType": str(header.get_data_dtype()),
        "BitDepth": int(header["bitpix"]),
        "VoxelSize": zooms,
        "Intent": str(header.get_intent()[0]),
        "Unit": {"L": "mm", "T": "sec"},
        "QForm": 1,
        "SForm": 1,
        "Affine": np.asarray(affine, dtype=float)[:3].tolist(),
        "ScaleSlope": 1.0,
        "ScaleOffset": 0.0,
    }


def create_nifti_zarr(
    path: str,
    spatial_shape: Sequence[int],
    channels: int,
    dtype: torch.dtype,
    affine: np.ndarray,
    *,
    chunks: Sequence[int],
    label: bool = False,
) -> Any:
    """Create an empty NIfTI-Zarr group at ``path``; return its voxel array (``"0"``)."""
    import zarr

    numpy_dtype = torch.empty((), dtype=dtype).numpy().dtype
    i, j, k = (int(n) for n in spatial_shape)
    ci, cj, ck = (int(c) for c in chunks)
    group = zarr.open_group(store=path, mode="w", zarr_format=3)
    spatial_axes = ["z", "y", "x"]
    axes = spatial_axes if channels == 1 else ["c", *spatial_axes]
    shape = (k, j, i) if channels == 1 else (channels, k, j, i)
    chunk_shape = (ck, cj, ci) if channels == 1 else (1, ck, cj, ci)
    array = group.create_array(
        "0",
        shape=shape,
        chunks=tuple(min(c, n) for c, n in zip(chunk_shape, shape, strict=True)),
        dtype=numpy_dtype,
        fill_value=0,
        dimension_names=axes,
    )
    array.attrs["_ARRAY_DIMENSIONS"] = [{"c": "channel"}.get(a, a) for a in axes]
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    scale = ([1.0] if channels > 1 else []) + [float(s) for s in spacing[::-1]]
    group.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "name": "",
                "type": "voxelflow patch aggregation",
                "axes": [
                    {"name": "c", "type": "channel"}
                    if a == "c"
                    else {"name": a, "type": "space", "unit": "millimeter"}
                    for a in axes
                ],
                "datasets": [
                    {
                        "path": "0",
                        "coordinateTransformations": [
                            {"type": "scale", "scale": scale},
                            {"type": "translation", "translation": [0.0] * len(axes)},
                        ],
                    }
                ],
                "coordinateTransformations": [{"type": "scale", "scale": [1.0] * len(axes)}],
            }
        ],
    }
    header = nifti_header((i, j, k), channels, numpy_dtype, affine, label=label)
    stream = io.BytesIO()
    header.write_to(stream)
    raw = np.frombuffer(stream.getvalue(), dtype=np.uint8)[:-4]  # no extension flag
    nifti = group.create_array(
        "nifti", shape=(raw.size,), chunks=(raw.size,), dtype="u1", compressors=None
    )
    nifti[:] = raw
    nifti.attrs.update(_jnifti_fields(header, affine))
    return array


class ZarrVolume:
    """A NIfTI-Zarr voxel array seen as ``(C, I, J, K)``, read region by region.

    Used as the lazy array of an :class:`~voxelflow.Image` over the aggregator's
    output (through :class:`~voxelflow.backends.ArrayLikeBackend`) when no
    NIfTI-Zarr backend is registered.

    Example:
        >>> import numpy as np, zarr
        >>> array = zarr.create_array(store={}, shape=(4, 3, 2), dtype="f4")  # (z, y, x)
        >>> array[:] = np.arange(24).reshape(4, 3, 2)
        >>> ZarrVolume(array).shape, float(ZarrVolume(array)[0, 1, 2, 3])
        ((1, 2, 3, 4), 23.0)
    """

    def __init__(self, array: Any) -> None:
        self.array = array
        self._three_d = array.ndim == 3
        self.dtype = array.dtype
        reversed_shape = tuple(int(n) for n in array.shape[::-1])
        self.shape = (
            (1, *reversed_shape) if self._three_d else (reversed_shape[-1], *reversed_shape[:3])
        )

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        c, i, j, k = key + (slice(None),) * (4 - len(key))
        if self._three_d:
            return np.asarray(self.array[k, j, i]).transpose()[None][c]
        return np.asarray(self.array[c, k, j, i]).transpose(0, 3, 2, 1)


class DiskAccumulator:
    """Weighted sums of patches, in slabs of whole chunks along ``k``, normalised into a zarr array.

    Args:
        path: the output ``.nii.zarr``.
        spatial_shape: ``(I, J, K)`` of the output.
        channels: channels of the model's output.
        dtype: dtype of the sums and of the file (``float32`` or ``float16``).
        affine: 4×4 of the output grid.
        max_patch_k: the largest extent of a patch along ``k`` (output voxels).
        chunks: chunk shape ``(ci, cj, ck)``; a slab is ``ck`` voxels thick.
        argmax: write the argmax over channels as a label map instead of the channels.

    Example:
        >>> import numpy as np, tempfile, torch
        >>> from voxelflow.patches.disk import DiskAccumulator
        >>> path = tempfile.mkdtemp() + "/out.nii.zarr"
        >>> acc = DiskAccumulator(path, (4, 4, 8), 1, torch.float32, np.eye(4),
        ...                       max_patch_k=4, chunks=(4, 4, 4))
        >>> for k in (0, 4):
        ...     acc.add((slice(0, 4), slice(0, 4), slice(k, k + 4)), torch.full((1, 4, 4, 4), 2.0), 1.0)
        >>> acc.finish()
        >>> import zarr; float(zarr.open_group(path)["0"][:].mean())
        2.0
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        spatial_shape: Sequence[int],
        channels: int,
        dtype: torch.dtype,
        affine: np.ndarray,
        *,
        max_patch_k: int,
        chunks: Sequence[int] = (DEFAULT_CHUNK,) * 3,
        argmax: bool = False,
    ) -> None:
        self.path = os.fspath(path)
        self.spatial_shape = tuple(int(n) for n in spatial_shape)
        self.channels = int(channels)
        self.dtype = dtype
        self.chunks = tuple(min(int(c), n) for c, n in zip(chunks, self.spatial_shape, strict=True))
        self.argmax = argmax
        self.max_patch_k = int(max_patch_k)
        self.slab = self.chunks[2]
        self.num_slabs = math.ceil(self.spatial_shape[2] / self.slab)
        self._slabs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._flushed = 0  # slabs [0, _flushed) are written
        self._peak_slabs = 0
        self._stack = contextlib.ExitStack()
        self._tmp = self._stack.enter_context(atomic_target(self.path))
        file_dtype = label_dtype(channels) if argmax else dtype
        self._array = create_nifti_zarr(
            self._tmp,
            self.spatial_shape,
            1 if argmax else channels,
            file_dtype,
            affine,
            chunks=self.chunks,
            label=argmax,
        )
        self.finished = False

    # ------------------------------------------------------------------ memory
    @property
    def slab_bytes(self) -> int:
        """Bytes of one open slab: sums (``C`` channels) and weights (one channel)."""
        i, j, _ = self.spatial_shape
        voxels = i * j * self.slab
        value_size = torch.empty((), dtype=self.dtype).element_size()
        return voxels * (self.channels * value_size + 4)

    @property
    def max_open_slabs(self) -> int:
        """Slabs open at once: those a patch of ``max_patch_k`` can span, plus one."""
        return min(self.num_slabs, math.ceil(self.max_patch_k / self.slab) + 1)

    @property
    def memory_bound(self) -> int:
        """Bytes this accumulator holds at most: the open slabs, plus the normalised copy
        of one slab (float32 and its transposed, contiguous copy) while it is written."""
        i, j, _ = self.spatial_shape
        flush = 2 * i * j * self.slab * self.channels * 4
        return self.max_open_slabs * self.slab_bytes + flush

    @property
    def peak_open_slabs(self) -> int:
        """The most slabs that were open at once so far."""
        return self._peak_slabs

    # ------------------------------------------------------------------ adding
    def advance(self, k: int) -> None:
        """No patch added from now on starts before ``k``: write every slab that ends at or before it."""
        done = min(k // self.slab, self.num_slabs)
        while self._flushed < done:
            self._flush(self._flushed)
            self._flushed += 1

    def add(
        self, box: tuple[slice, slice, slice], data: torch.Tensor, weight: torch.Tensor | float
    ) -> None:
        """Add ``data`` (``(C, …box)``, already weighted) and ``weight`` (box-shaped or a number)."""
        if self.finished:
            raise VoxelflowRuntimeError(
                f"{self.path}: the output is already written; start a new aggregator"
            )
        bi, bj, bk = box
        if bk.start < self._flushed * self.slab:
            raise VoxelflowValueError(
                f"{self.path}: a patch reaches k={bk.start}, but slabs before k="
                f"{self._flushed * self.slab} are already written. On-disk aggregation needs "
                "patches in grid order (k never decreasing): iterate a GridSampler in order "
                "(no shuffle, no random subset)"
            )
        first, last = bk.start // self.slab, (bk.stop - 1) // self.slab
        for s in range(first, last + 1):
            values, weights = self._open(s)
            z0, z1 = max(bk.start, s * self.slab), min(bk.stop, (s + 1) * self.slab)
            src = slice(z0 - bk.start, z1 - bk.start)
            dst = slice(z0 - s * self.slab, z1 - s * self.slab)
            values[:, bi, bj, dst].add_(data[..., src])
            if isinstance(weight, torch.Tensor):
                weights[bi, bj, dst].add_(weight[..., src])
            else:
                weights[bi, bj, dst].add_(weight)

    def _open(self, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        if s not in self._slabs:
            i, j, k = self.spatial_shape
            depth = min(self.slab, k - s * self.slab)
            with torch.inference_mode(False):  # normal tensors: updatable in and out of it
                self._slabs[s] = (
                    torch.zeros((self.channels, i, j, depth), dtype=self.dtype),
                    torch.zeros((i, j, depth), dtype=torch.float32),
                )
            self._peak_slabs = max(self._peak_slabs, len(self._slabs))
        return self._slabs[s]

    def _flush(self, s: int) -> None:
        if s not in self._slabs:
            k0, k1 = s * self.slab, min((s + 1) * self.slab, self.spatial_shape[2])
            raise VoxelflowValueError(
                f"{self.path}: no patch covered k={k0}..{k1} before the output moved past it; "
                "on-disk aggregation needs every patch of the grid, in grid order (k never "
                "decreasing): iterate a GridSampler in order, without shuffling"
            )
        values, weights = self._slabs.pop(s)
        empty = int((weights == 0).sum())
        if empty:
            raise VoxelflowValueError(
                f"{self.path}: {empty} voxels in k={s * self.slab}..{s * self.slab + weights.shape[2]} "
                "were covered by no patch; add every patch of the grid (in grid order)"
            )
        normalised = torch.div(values.to(torch.float32), weights)
        del values
        if self.argmax:
            out = normalised.argmax(0).to(label_dtype(self.channels))
        else:
            out = normalised.to(self.dtype)
        del normalised
        z0 = s * self.slab
        z1 = z0 + weights.shape[2]
        # (C, I, J, k) -> (C, k, J, I): the zarr order
        array = np.ascontiguousarray(out.numpy().transpose()) if out.ndim == 3 else None
        if array is not None:  # argmax: (I, J, k) -> (k, J, I)
            self._array[z0:z1] = array
        elif self.channels == 1:
            self._array[z0:z1] = np.ascontiguousarray(out[0].numpy().transpose())
        else:
            self._array[:, z0:z1] = np.ascontiguousarray(out.numpy().transpose(0, 3, 2, 1))

    # ------------------------------------------------------------------ ending
    def finish(self) -> None:
        """Write the remaining slabs and move the file into place."""
        if self.finished:
            return
        try:
            self.advance(self.spatial_shape[2] + self.slab)
        except BaseException as error:
            self.abort(error)
            raise
        self._stack.close()
        self.finished = True

    def abort(self, error: BaseException | None = None) -> None:
        """Drop the partial output (nothing is left at ``path``)."""
        if self.finished:
            return
        self._slabs.clear()
        error = error or VoxelflowRuntimeError("aborted")
        self._stack.__exit__(type(error), error, error.__traceback__)
        self.finished = True
