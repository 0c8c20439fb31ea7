"""Fast ``.nii.gz`` reading: parallel whole decodes and a persistent seek-point index.

Gzip is a stream: byte ``n`` of the data can only be produced by inflating
everything before it. Two things make ``.nii.gz`` fast anyway:

* **Whole reads** inflate with rapidgzip's parallel decoder (which uses ISA-L's
  inflate where it can) or, for small files and single-threaded use, ISA-L
  through ``isal.igzip``, straight into one preallocated buffer of the file's
  data size (:mod:`~voxelflow.backends.gzindex.decode`).
* **Region reads** use a *seek-point index* of the gzip stream
  (:mod:`~voxelflow.backends.gzindex.index`: rapidgzip's, in gztool's compact
  format, stored beside the file or in the cache directory and verified
  against the file before use) through an
  :class:`~voxelflow.backends.gzindex.reader.IndexedReader`: a region read
  inflates only from the nearest seek point before each byte run it needs,
  runs being planned by :mod:`voxelflow.backends.segments`.

Access policy (``backend_options={"gz_access": ...}``):

* ``"decode"``: inflate the whole volume once, keep it (releasable with
  ``Image.unload()``), and slice every region from memory.
* ``"index"``: every region read goes through the seek-point index.
* ``"auto"`` (default): volumes of at most :data:`SMALL_VOLUME` bytes are
  decoded once and cached; larger ones use the index until the bytes inflated
  by indexed reads reach :data:`DECODE_AFTER` times the volume's size (the
  point where one full decode would have cost about as much: a ski-rental
  rule, never more than about 1.5× the better choice), then switch to a
  cached full decode if the volume fits in the per-process budget
  (:mod:`~voxelflow.backends.gzindex.cache`).

Measured figures and the benchmark that measures them: ``benchmarks/README.md``
(``bench_nifti_gz.py``).

Example:
    >>> import voxelflow as tio
    >>> image = tio.ScalarImage(tio.datasets.nibabel_file("example4d.nii.gz"),
    ...                         backend_options={"gz_access": "decode"})
    >>> tuple(image.dataobj[:, 10:12, 20:23, 5].shape)
    (2, 2, 3, 1)
"""

from __future__ import annotations

from typing import Literal

from voxelflow.backends.gzindex.cache import DECODE_CACHE, DecodeCache, cache_budget
from voxelflow.backends.gzindex.decode import (
    CHUNK_SIZE,
    MAX_TRAILING,
    PARALLEL_ABOVE,
    corrupt_error,
    decode_errors,
    default_threads,
    igzip_module,
    inflate_into,
    rapidgzip_module,
)
from voxelflow.backends.gzindex.index import (
    INDEX_SUFFIX,
    Fingerprint,
    StoredIndex,
    build_index,
    cache_dir,
    ensure_index,
    index_locations,
    load_index,
    save_index,
)
from voxelflow.backends.gzindex.reader import IndexedReader

GzAccess = Literal["auto", "index", "decode"]
GZ_ACCESS: tuple[str, ...] = ("auto", "index", "decode")

#: Volumes at most this big (bytes of voxel data) are decoded whole in ``"auto"``.
SMALL_VOLUME = 128 << 20
#: In ``"auto"``, switch to a cached full decode once indexed reads have inflated
#: this many times the volume's size.
DECODE_AFTER = 0.5
#: Byte runs closer than this are inflated as one span and cut in memory (the
#: planner's seek cost for an indexed read).
MERGE_GAP = 256 << 10
#: A span read through the index is split so that its scratch buffer stays below this.
MAX_SPAN = 64 << 20

__all__ = [
    "CHUNK_SIZE",
    "DECODE_AFTER",
    "DECODE_CACHE",
    "GZ_ACCESS",
    "INDEX_SUFFIX",
    "MAX_SPAN",
    "MAX_TRAILING",
    "MERGE_GAP",
    "PARALLEL_ABOVE",
    "SMALL_VOLUME",
    "DecodeCache",
    "Fingerprint",
    "GzAccess",
    "IndexedReader",
    "StoredIndex",
    "build_index",
    "cache_budget",
    "cache_dir",
    "corrupt_error",
    "decode_errors",
    "default_threads",
    "ensure_index",
    "igzip_module",
    "index_locations",
    "inflate_into",
    "load_index",
    "rapidgzip_module",
    "save_index",
]
