"""The three members of the backend contract the patch pipeline uses.

TEMPORARY: ``region_cost``, ``cache_key`` and ``read_into`` are being added to
every backend (the backend contract); until they are, these functions derive
them from the members backends have today. Delete this module and use the
members directly once they exist.
"""

from __future__ import annotations

import os
from collections.abc import Hashable
from typing import Literal

import numpy as np
import torch

from voxelflow._indexing import Box
from voxelflow.backends.base import BackendProtocol

RegionCost = Literal["proportional", "stream", "whole"]


def region_cost(backend: BackendProtocol) -> RegionCost:
    """What a region read costs: about its bytes, a stream from a seek point, or the volume."""
    declared = getattr(backend, "region_cost", None)
    if declared is not None:
        return declared  # type: ignore[no-any-return]
    if backend.in_memory:
        return "proportional"
    if not backend.region_reads:
        return "whole"
    path = backend.path or ""
    return "stream" if path.endswith(".gz") else "proportional"


def cache_key(backend: BackendProtocol) -> Hashable | None:
    """What identifies the stored values (file, size, mtime, region); ``None`` when nothing does."""
    if hasattr(backend, "cache_key"):
        return backend.cache_key  # type: ignore[no-any-return]
    path = backend.path
    if backend.in_memory or path is None or "://" in path:
        return None
    stat = os.stat(path)
    affine = np.asarray(backend.affine, dtype=np.float64).tobytes()
    return ("file", path, stat.st_size, stat.st_mtime_ns, tuple(backend.shape), affine)


def read_into(backend: BackendProtocol, box: Box, out: torch.Tensor) -> None:
    """Fill ``out`` (the box's shape, any dtype, maybe a view) with the region ``box``."""
    declared = getattr(backend, "read_into", None)
    if declared is not None:
        declared(box, out)
        return
    out.copy_(backend.read(box))
