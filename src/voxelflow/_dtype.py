"""The dtype policy: what ``image.data`` holds for values read from storage.

A TorchIO user feeds ``batch.t1.data`` to a model and ``batch.seg.data`` to a
loss, whatever type the file stores. So values read from a file, a URI, a
nibabel image or a custom reader become:

* intensity images (``ScalarImage``): ``torch.float32``, the dtype of a
  model's weights (TorchIO's documented behaviour; its 1.x releases read every
  NIfTI as float32);
* label maps (``LabelMap``): integers. The stored integer type is kept (a
  ``uint8`` segmentation stays one byte per voxel); types PyTorch handles
  poorly are widened as TorchIO 2.0 does (``bool`` → ``uint8``, ``uint16`` →
  ``int32``, ``uint32``/``uint64`` → ``int64``); labels stored as floating
  point become ``int64`` and must hold whole numbers;
* other image types: the stored dtype.

The conversion happens per region read, so a patch costs a patch. Tensors and
arrays passed in by the caller keep their dtype (they are the caller's choice)
unless ``dtype=`` asks otherwise. ``dtype="stored"`` keeps the stored dtype
(after any ``scl_slope``/``scl_inter`` scaling), which ``image.stored_dtype``
always reports.
"""

from __future__ import annotations

from typing import Literal

import torch

from voxelflow._errors import VoxelflowTypeError, VoxelflowValueError

STORED: Literal["stored"] = "stored"
DtypeRequest = torch.dtype | Literal["stored"] | None

INTENSITY = "intensity"
LABEL = "label"

_LABEL_WIDENED = {
    torch.bool: torch.uint8,
    torch.uint16: torch.int32,
    torch.uint32: torch.int64,
    torch.uint64: torch.int64,
}


def check_request(dtype: object, what: str) -> DtypeRequest:
    """Validate a ``dtype=`` argument once, at construction."""
    if dtype is None or dtype == STORED or isinstance(dtype, torch.dtype):
        return dtype  # type: ignore[return-value]
    raise VoxelflowTypeError(
        f"{what}: dtype={dtype!r} is not a torch.dtype; pass e.g. dtype=torch.float16, "
        f"dtype={STORED!r} to keep the stored type, or nothing for the default policy"
    )


def target_dtype(image_type: str, stored: torch.dtype, request: DtypeRequest) -> torch.dtype:
    """The dtype ``data`` has for values stored as ``stored`` (see the module docstring)."""
    if isinstance(request, torch.dtype):
        return request
    if request == STORED:
        return stored
    if image_type == INTENSITY:
        return stored if stored.is_complex else torch.float32
    if image_type == LABEL:
        if stored.is_floating_point:
            return torch.int64
        return _LABEL_WIDENED.get(stored, stored)
    return stored


def convert(data: torch.Tensor, dtype: torch.dtype, what: str) -> torch.Tensor:
    """``data`` as ``dtype``; floating values that become integers must be whole numbers."""
    if data.dtype == dtype:
        return data
    if data.is_floating_point() and not (dtype.is_floating_point or dtype.is_complex):
        whole = torch.isfinite(data) & (data == data.trunc())
        if not bool(whole.all()):
            bad = data[~whole][0].item()
            raise VoxelflowValueError(
                f"{what}: a label map must hold whole numbers, but it stores {bad} "
                f"({data.dtype}); open it as a ScalarImage, or pass dtype='stored' to keep "
                "the stored floating-point values"
            )
    return data.to(dtype)
