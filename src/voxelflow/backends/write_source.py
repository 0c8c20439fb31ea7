"""What a writer reads from: the typed source protocol, and its adapter for images.

Writers never look inside an image or its backend. They take a
:class:`WriteSource`: the shape, the affine, the dtype to store, the NIfTI
header to write (the source file's own, with its codes, units, intent,
description and scaling, when there is one; else a fresh one), and
``read_stored(box)``. :func:`source_of` builds one for an
:class:`~voxelflow.Image`:

* a lazy image of a NIfTI or NIfTI-Zarr file stores the file's raw values
  with its header (scaling, stored dtype and header codes survive a
  conversion bit for bit);
* anything else stores the values as they are held (a loaded image's data in
  its dtype; a lazy image's values as its storage holds them, not converted by
  the dtype policy; half floats widen to float32, booleans become uint8), with
  the header facts of its file (codes, units, intent) when it came from one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import nibabel as nib
import numpy as np

from voxelflow._indexing import Box
from voxelflow.backends.base import Backend, BackendProtocol, storable, storable_dtype
from voxelflow.backends.nifti_header import NiftiHeaderType

ChannelAxis = str  # "t" (NIfTI's 4th dim) or "c" (its 5th, vector components)


@runtime_checkable
class WriteSource(Protocol):
    """What a writer needs: header facts and stored values, region by region."""

    @property
    def shape(self) -> tuple[int, int, int, int]: ...

    @property
    def affine(self) -> np.ndarray: ...

    @property
    def stored_dtype(self) -> np.dtype: ...

    @property
    def label(self) -> bool: ...

    def header(self, channels_on: ChannelAxis) -> NiftiHeaderType: ...

    def read_stored(self, box: Box) -> np.ndarray: ...


def fresh_header(
    shape: tuple[int, int, int, int],
    dtype: np.dtype,
    affine: np.ndarray,
    *,
    label: bool = False,
    channels_on: ChannelAxis = "t",
    like: NiftiHeaderType | None = None,
) -> NiftiHeaderType:
    """A NIfTI header for a ``(C, I, J, K)`` volume of ``dtype``.

    Channels go on NIfTI's 4th dim (``"t"``) or on its 5th (``"c"``, vector
    components). ``like``: a header whose codes, units, intent, description
    and timing are kept. Without one, the affine is stored with
    qform/sform codes 1 (scanner) and units mm/s.

    Example:
        >>> import numpy as np
        >>> from voxelflow.backends.write_source import fresh_header
        >>> header = fresh_header((3, 4, 5, 6), np.dtype("f4"), np.eye(4), channels_on="c")
        >>> header.get_data_shape(), [int(header[k]) for k in ("qform_code", "sform_code")]
        ((4, 5, 6, 1, 3), [1, 1])
    """
    channels, *spatial = shape
    if channels == 1:
        dims = tuple(spatial)
    elif channels_on == "c":
        dims = (*spatial, 1, channels)
    else:
        dims = (*spatial, channels)
    large = max(dims) > 32767
    klass = nib.Nifti2Header if large or isinstance(like, nib.Nifti2Header) else nib.Nifti1Header
    if like is not None:
        header = klass.from_header(like)
        header.set_slope_inter(np.nan, np.nan)  # the values are stored as read: no scaling
        qcode, scode = int(like["qform_code"]), int(like["sform_code"])
    else:
        header = klass()
        header.set_xyzt_units("mm", "sec")
        qcode, scode = 1, 1
        if label:
            header.set_intent("label")
    header.set_data_shape(dims)
    header.set_data_dtype(dtype)
    set_affine(header, affine, qcode, scode)
    if header.get_xyzt_units() == ("unknown", "unknown"):
        header.set_xyzt_units("mm", "sec")
    return header


def set_affine(header: NiftiHeaderType, affine: np.ndarray, qcode: int, scode: int) -> None:
    """Store ``affine`` in both forms with the given codes (an affine stored with both codes 0
    would be ignored by readers: it then goes in the sform as 'aligned')."""
    affine = np.asarray(affine, dtype=np.float64)
    if qcode == 0 and scode == 0:
        scode = 2
    header.set_qform(affine, code=qcode)
    header.set_sform(affine, code=scode)


def header_affine(header: NiftiHeaderType) -> np.ndarray:
    return np.asarray(header.get_best_affine(), dtype=np.float64)


@dataclass
class ImageSource:
    """:class:`WriteSource` for an :class:`~voxelflow.Image` (see the module docs)."""

    image: Any
    label: bool
    keep_stored: bool = True

    def __post_init__(self) -> None:
        image = self.image
        backend: BackendProtocol = image.dataobj
        self._backend = backend
        self._stored_header: NiftiHeaderType | None = None
        if isinstance(backend, Backend):
            candidate = backend.nifti_header
            if candidate is not None and _dims_match(candidate, image.shape):
                self._stored_header = candidate
        self.raw = self.keep_stored and self._stored_header is not None and not image.is_loaded
        if self.raw:
            assert self._stored_header is not None
            self._dtype = np.dtype(self._stored_header.get_data_dtype()).newbyteorder("=")
        else:  # the values as held: loaded data as it is, a lazy image's as stored
            self._dtype = storable_dtype(image.dtype if image.is_loaded else backend.dtype)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        c, i, j, k = self.image.shape
        return (int(c), int(i), int(j), int(k))

    @property
    def affine(self) -> np.ndarray:
        return np.asarray(self.image.affine, dtype=np.float64)

    @property
    def stored_dtype(self) -> np.dtype:
        return self._dtype

    def header(self, channels_on: ChannelAxis) -> NiftiHeaderType:
        stored = self._stored_header
        if self.raw:
            assert stored is not None
            header = stored.copy()
            if not np.allclose(header_affine(header), self.affine, atol=1e-6):
                set_affine(
                    header, self.affine, int(header["qform_code"]), int(header["sform_code"])
                )
            return header
        return fresh_header(
            self.shape,
            self._dtype,
            self.affine,
            label=self.label,
            channels_on=channels_on if stored is None else _channel_axis(stored, channels_on),
            like=stored,
        )

    def read_stored(self, box: Box) -> np.ndarray:
        """``(C, I, J, K)`` values of ``box``, of ``stored_dtype``."""
        if self.raw:
            assert isinstance(self._backend, Backend)
            return storable(self._backend.read_stored(box), self._dtype)
        data = self.image.data[box] if self.image.is_loaded else self._backend.read(box)
        return storable(data, self._dtype)


def _dims_match(header: NiftiHeaderType, shape: tuple[int, ...]) -> bool:
    dims = tuple(int(n) for n in header.get_data_shape())
    if len(dims) < 3:
        return False
    channels = int(np.prod(dims[3:], dtype=np.int64))
    return (channels, *dims[:3]) == tuple(shape)


def _channel_axis(header: NiftiHeaderType, default: ChannelAxis) -> ChannelAxis:
    dims = header.get_data_shape()
    if len(dims) == 5:
        return "c"
    if len(dims) == 4:
        return "t"
    return default


def source_of(image: Any, label: bool | None = None, *, keep_stored: bool = True) -> ImageSource:
    """The :class:`WriteSource` of an image (``label``: default from the image's type;
    ``keep_stored=False``: store the values the image reads, never the raw ones)."""
    label = image.type == "label" if label is None else bool(label)
    return ImageSource(image, label, keep_stored)
