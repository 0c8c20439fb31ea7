"""NIfTI-Zarr writer: stream any image to a ``.nii.zarr`` store with its pyramid.

:func:`write_niftizarr` reads the source slab by slab along ``K`` and builds
the multi-resolution pyramid on the fly (mean for intensities, majority vote
for label maps), so the volume never has to fit in memory. The store is
written atomically (a temporary directory renamed on success) with the OME
multiscales metadata, the binary NIfTI header in the ``nifti`` array and its
JSON rendering (:func:`header_json`). Reading is
:class:`~voxelflow.backends.niftizarr.NiftiZarrBackend`.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import nibabel as nib
import numpy as np
import torch

from voxelflow._atomic import atomic_target
from voxelflow._errors import VoxelflowValueError, check_choice, did_you_mean
from voxelflow.backends._niftizarr_layout import Layout
from voxelflow.backends.niftizarr import COMPLETE_ATTR, NiftiZarrBackend, is_remote

Codec = Literal["blosc", "zstd", "gzip", "none"]
Method = Literal["mean", "majority", "nearest"]

CODECS: tuple[str, ...] = ("blosc", "zstd", "gzip", "none")
METHODS: tuple[str, ...] = ("mean", "majority", "nearest")
ZARR_FORMATS = (2, 3)


# ============================================================================ JSON header
_DTYPE_NAMES = {
    2: "uint8", 4: "int16", 8: "int32", 16: "single", 32: "complex64", 64: "double",
    256: "int8", 512: "uint16", 768: "uint32", 1024: "int64", 1280: "uint64",
    1536: "double128", 1792: "complex128", 2048: "complex256",
}  # fmt: skip
_INTENT_NAMES = {
    0: "", 2: "corr", 3: "ttest", 4: "ftest", 5: "zscore", 6: "chi2", 7: "beta", 8: "binomial",
    9: "gamma", 10: "poisson", 11: "normal", 12: "ncftest", 13: "ncchi2", 14: "logistic",
    15: "laplace", 16: "uniform", 17: "ncttest", 18: "weibull", 19: "chi", 20: "invgauss",
    21: "extval", 22: "pvalue", 23: "logpvalue", 24: "log10pvalue", 1001: "estimate",
    1002: "label", 1003: "neuronames", 1004: "matrix", 1005: "symmatrix", 1006: "dispvec",
    1007: "vector", 1008: "point", 1009: "triangle", 1010: "quaternion", 1011: "unitless",
    2001: "tseries", 2002: "elem", 2003: "rgb", 2004: "rgba", 2005: "shape",
}  # fmt: skip
_INTENT_PARAMS = {
    "corr": 1, "ttest": 1, "ftest": 2, "chi2": 1, "beta": 2, "binomial": 2, "gamma": 2,
    "poisson": 1, "normal": 2, "ncftest": 3, "ncchi2": 2, "logistic": 2, "laplace": 2,
    "uniform": 2, "ncttest": 2, "weibull": 2, "chi": 1, "invgauss": 2, "extval": 2,
    "matrix": 2, "symmatrix": 1,
}  # fmt: skip
_UNITS = {
    0: "",
    1: "m",
    2: "mm",
    3: "um",
    8: "s",
    16: "ms",
    24: "us",
    32: "hz",
    40: "ppm",
    48: "rad/s",
}
_OME_UNITS = {"m": "meter", "mm": "millimeter", "um": "micrometer", "s": "second",
              "ms": "millisecond", "us": "microsecond", "": ""}  # fmt: skip
_SLICE_CODES = {0: "", 1: "seq+", 2: "seq-", 3: "alt+", 4: "alt-", 5: "alt2+", 6: "alt2-"}
_XFORMS = {0: "", 1: "scanner_anat", 2: "aligned_anat", 3: "talairach", 4: "mni_152",
           5: "template_other"}  # fmt: skip


def _text(value: Any) -> str:
    raw = np.asarray(value).tobytes().split(b"\x00", 1)[0]
    return "".join(ch for ch in raw.decode("latin-1") if ch.isprintable())


def _num(value: Any) -> float:
    number = float(value)
    return number if math.isfinite(number) else 0.0


def header_json(header: nib.Nifti1Header | nib.Nifti2Header) -> dict[str, Any]:
    """The JSON rendering of a NIfTI header that NIfTI-Zarr puts on the ``nifti`` array."""
    h = header.structarr
    ndim = int(h["dim"][0])
    intent = _INTENT_NAMES.get(int(h["intent_code"]), "")
    intent_p = [float(h["intent_p1"]), float(h["intent_p2"]), float(h["intent_p3"])]
    params = intent_p[: _INTENT_PARAMS.get(intent, 0)]
    units = int(h["xyzt_units"])
    version1 = int(h["sizeof_hdr"]) == 348
    dim_info = int(h["dim_info"])
    sform = np.asarray(h["srow_x"].tolist() + h["srow_y"].tolist() + h["srow_z"].tolist())
    out: dict[str, Any] = {
        "NIIHeaderSize": int(h["sizeof_hdr"]),
        "DimInfo": {
            "Freq": dim_info & 3,
            "Phase": (dim_info >> 2) & 3,
            "Slice": (dim_info >> 4) & 3,
        },
        "Dim": [int(d) for d in h["dim"][1 : 1 + ndim]],
        "Param1": params[0] if len(params) > 0 else None,
        "Param2": params[1] if len(params) > 1 else None,
        "Param3": params[2] if len(params) > 2 else None,
        "Intent": intent,
        "DataType": _DTYPE_NAMES.get(int(h["datatype"]), ""),
        "BitDepth": int(h["bitpix"]),
        "FirstSliceID": int(h["slice_start"]),
        "VoxelSize": [_num(p) for p in h["pixdim"][1 : 1 + ndim]],
        "Orientation": {"x": "r" if float(h["pixdim"][0]) == 0 else "l", "y": "a", "z": "s"},
        "NIIByteOffset": int(h["vox_offset"]),
        "ScaleSlope": _num(h["scl_slope"]),
        "ScaleOffset": _num(h["scl_inter"]),
        "LastSliceID": int(h["slice_end"]),
        "SliceType": _SLICE_CODES.get(int(h["slice_code"]), ""),
        "Unit": {"L": _UNITS.get(units & 0x07, ""), "T": _UNITS.get(units & 0x38, "")},
        "MaxIntensity": _num(h["cal_max"]),
        "MinIntensity": _num(h["cal_min"]),
        "SliceTime": _num(h["slice_duration"]),
        "TimeOffset": _num(h["toffset"]),
        "Description": _text(h["descrip"]),
        "AuxFile": _text(h["aux_file"]),
        "QForm": _XFORMS.get(int(h["qform_code"]), ""),
        "SForm": _XFORMS.get(int(h["sform_code"]), ""),
        "Quatern": {k: _num(h[f"quatern_{k}"]) for k in "bcd"},
        "QuaternOffset": {k: _num(h[f"qoffset_{k}"]) for k in "xyz"},
        "Affine": [[_num(v) for v in sform[r * 4 : r * 4 + 4]] for r in range(3)],
        "Name": _text(h["intent_name"]),
        "NIIFormat": _text(h["magic"]),
        "NIFTIExtension": [1 if len(header.extensions) else 0, 0, 0, 0],
        "A75DataTypeName": _text(h["data_type"]) if version1 else "",
        "A75DBName": _text(h["db_name"]) if version1 else "",
        "A75Extends": int(h["extents"]) if version1 else 0,
        "A75SessionError": int(h["session_error"]) if version1 else 0,
        "A75Regular": int(np.frombuffer(h["regular"].tobytes(), np.uint8)[0]) if version1 else 0,
        "A75GlobalMax": int(h["glmax"]) if version1 else 0,
        "A75GlobalMin": int(h["glmin"]) if version1 else 0,
    }
    return out


# ============================================================================ writing
@dataclass
class _Level:
    """One pyramid level being written: its array and the slices waiting to be written."""

    array: Any
    factors: tuple[int, int, int]  # (z, y, x) downsampling from the level above (1 or 2)
    slab: int  # slices written at once (the z chunk, or shard)
    pending: list[np.ndarray]
    written: int = 0
    carry: np.ndarray | None = None  # odd slice waiting for its pair (input to this level)


def _pyramid_shapes(spatial_zyx: Sequence[int], levels: int) -> list[tuple[int, int, int]]:
    shapes = [tuple(int(s) for s in spatial_zyx)]
    while len(shapes) < levels:
        prev = shapes[-1]
        if all(s == 1 for s in prev):
            break
        shapes.append(tuple((s + 1) // 2 if s > 1 else 1 for s in prev))
    return shapes  # type: ignore[return-value]


def default_levels(spatial: Sequence[int], chunk: Sequence[int]) -> int:
    """Levels until the coarsest fits in one chunk (the reference implementation's default)."""
    ratio = max(s / c for s, c in zip(spatial, chunk, strict=True))
    return max(1, int(math.ceil(math.log2(ratio))) + 1 if ratio > 1 else 1)


def _reduce(block: np.ndarray, factors: tuple[int, int, int], method: str) -> np.ndarray:
    """Downsample the last three axes by ``factors`` (1 or 2 each); sizes must divide."""
    *lead, z, y, x = block.shape
    fz, fy, fx = factors
    shaped = block.reshape(*lead, z // fz, fz, y // fy, fy, x // fx, fx)
    n = len(lead)
    axes = (n + 1, n + 3, n + 5)
    if method == "nearest":
        return shaped[(Ellipsis, slice(None), 0, slice(None), 0, slice(None), 0)].copy()
    if method == "mean":
        if block.dtype.kind == "f":
            return shaped.mean(axis=axes, dtype=np.float64).astype(block.dtype)
        mean = shaped.mean(axis=axes, dtype=np.float64)
        if block.dtype.kind in "iub":
            info = np.iinfo(block.dtype) if block.dtype.kind != "b" else None
            mean = np.rint(mean)
            if info is not None:
                mean = np.clip(mean, info.min, info.max)
        return mean.astype(block.dtype)
    # majority: the most frequent value of each block (ties: the smallest value)
    moved = np.moveaxis(shaped, axes, (-3, -2, -1))
    votes = moved.reshape(*moved.shape[:-3], fz * fy * fx)
    ordered = np.sort(votes, axis=-1)
    counts = (ordered[..., :, None] == ordered[..., None, :]).sum(-1)
    best = np.argmax(counts, axis=-1)
    return np.take_along_axis(ordered, best[..., None], axis=-1)[..., 0]


def _pad_even(block: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    """Replicate the last row/column where y or x is odd, so 2-blocks cover it.

    Replication makes every voxel of a border block count equally, so the mean
    and the majority over a padded block equal those over its real voxels.
    """
    pads = [(0, 0)] * (block.ndim - 3)
    for axis, f in zip((-3, -2, -1), factors, strict=True):
        size = block.shape[axis]
        pads.append((0, 1) if f == 2 and size % 2 else (0, 0))
    if any(p != (0, 0) for p in pads):
        return np.pad(block, pads, mode="edge")
    return block


def write_niftizarr(
    image: Any,
    path: str,
    *,
    chunk: int | Sequence[int] = 64,
    shard: int | Sequence[int] | None = None,
    codec: Codec = "blosc",
    compression_level: int | None = None,
    levels: int | None = None,
    method: Method | None = None,
    zarr_format: int = 3,
    label: bool | None = None,
    progress: bool | None = None,
) -> None:
    """Write ``image`` to a NIfTI-Zarr store, streaming slab by slab (atomic).

    Args:
        image: an :class:`~voxelflow.Image` (lazy or loaded).
        path: output ``.nii.zarr`` directory (replaced atomically if it exists).
        chunk: chunk size along ``(I, J, K)`` (one int for all three).
        shard: shard size along ``(I, J, K)`` (a multiple of ``chunk``; Zarr v3 only).
        codec: ``"blosc"`` (lz4 + shuffle), ``"zstd"``, ``"gzip"`` or ``"none"``.
        compression_level: codec level (default: the codec's own).
        levels: pyramid levels including full resolution (default: until the
            coarsest level fits in one chunk; 1 writes no pyramid).
        method: downsampling: ``"mean"`` (default for intensity images),
            ``"majority"`` (default for label maps) or ``"nearest"``. Label maps
            refuse ``"mean"``: labels are never smoothed.
        zarr_format: 3 (OME 0.5, default) or 2 (OME 0.4).
        label: treat the data as labels (default: ``image.type == "label"``).
        progress: show a progress bar (default: only on a terminal).

    The source is read in slabs of ``shard`` (or ``chunk``) slices along
    ``K``; each pyramid level keeps at most one slab of its own, so peak memory
    is about 1.5 slabs, whatever the volume size. Stored values are the file's
    raw values with its ``scl_slope``/``scl_inter`` when the source is a NIfTI
    or NIfTI-Zarr file opened directly; otherwise the values ``image`` reads.
    """
    writer = _Writer(
        image, path, chunk=chunk, shard=shard, codec=codec, compression_level=compression_level,
        levels=levels, method=method, zarr_format=zarr_format, label=label, progress=progress,
    )  # fmt: skip
    writer.run()


SAVE_OPTIONS = (
    "chunk", "shard", "codec", "compression_level", "levels", "method", "zarr_format", "label",
    "progress",
)  # fmt: skip


def save_niftizarr(image: Any, path: str, **options: Any) -> None:
    """Writer-registry entry: validates option names, then :func:`write_niftizarr`."""
    unknown = sorted(set(options) - set(SAVE_OPTIONS))
    if unknown:
        hint = did_you_mean(unknown[0], SAVE_OPTIONS)
        raise VoxelflowValueError(
            f"{path}: unknown NIfTI-Zarr save option(s) {unknown}; known: "
            f"{', '.join(SAVE_OPTIONS)}.{hint}"
        )
    write_niftizarr(image, path, **options)


def _triple(name: str, value: int | Sequence[int], path: str) -> tuple[int, int, int]:
    values = (value,) * 3 if isinstance(value, int | np.integer) else tuple(value)
    if len(values) != 3 or not all(isinstance(v, int | np.integer) and v >= 1 for v in values):
        raise VoxelflowValueError(
            f"{path}: {name}={value!r} must be a positive int or three positive ints (I, J, K)"
        )
    return tuple(int(v) for v in values)  # type: ignore[return-value]


class SlabSource:
    """Reads slabs of an image in zarr order, raw values + header when the file allows."""

    def __init__(self, image: Any, label: bool) -> None:
        self.image = image
        backend = None if image.is_loaded else image.dataobj
        self.backend = backend if backend is not None else None
        header = self._source_header(image, backend)
        if header is not None:
            self.header = header
            self.raw = True
        else:
            self.raw = False
            self.header = self._fresh_header(image, label)
        file_shape = tuple(int(n) for n in self.header.get_data_shape())
        axes = ["z", "y", "x"]
        if len(file_shape) > 4 and file_shape[4] > 1:
            axes.insert(0, "c")
        if len(file_shape) > 3 and file_shape[3] > 1:
            axes.insert(0, "t")
        self.layout = Layout(tuple(axes), file_shape)
        self.dtype = np.dtype(self.header.get_data_dtype()).newbyteorder("=")

    @staticmethod
    def _source_header(image: Any, backend: Any) -> Any:
        if backend is None or image._affine is not None:
            return None
        from voxelflow.backends.nifti import NiftiBackend

        if isinstance(backend, NiftiZarrBackend) and backend.level == 0:
            return backend.nifti_header.copy()
        if isinstance(backend, NiftiBackend):
            loaded: Any = nib.load(backend.header.path)
            header = loaded.header.copy()
            slope, inter = loaded.dataobj.slope, loaded.dataobj.inter
            header.set_slope_inter(slope, inter)
            return header
        return None

    @staticmethod
    def _fresh_header(image: Any, label: bool) -> nib.Nifti1Header:
        dtype = image.dtype
        numpy_dtype: np.dtype[Any]
        if dtype in (torch.float16, torch.bfloat16):
            numpy_dtype = np.dtype(np.float32)
        elif dtype == torch.bool:
            numpy_dtype = np.dtype(np.uint8)
        else:
            numpy_dtype = torch.empty(0, dtype=dtype).numpy().dtype
        channels, *spatial = image.shape
        shape = tuple(spatial) + ((channels,) if channels > 1 else ())
        klass = nib.Nifti2Header if max(shape) > 32767 else nib.Nifti1Header
        header = klass()
        header.set_data_shape(shape)
        header.set_data_dtype(numpy_dtype)
        affine = np.asarray(image.affine, dtype=np.float64)
        header.set_qform(affine, code=1)
        header.set_sform(affine, code=1)
        header.set_xyzt_units("mm", "sec")
        if label:
            header.set_intent("label")
        return header

    def read_cijk(self, k0: int, k1: int) -> np.ndarray:
        """Slices ``k0:k1`` (along K) as ``(C, I, J, k)`` values of the stored dtype."""
        channels, i, j, _ = self.image.shape
        box = (slice(0, channels, 1), slice(0, i, 1), slice(0, j, 1), slice(k0, k1, 1))
        if self.raw:
            assert self.backend is not None  # raw reads come from a NIfTI backend
            data = np.moveaxis(np.asarray(self.backend.read_raw(box)), -1, 0)
        elif self.backend is not None:
            data = self.backend.read(box).cpu().numpy()
        else:
            tensor = self.image.data[box]
            if tensor.dtype in (torch.float16, torch.bfloat16, torch.bool):
                tensor = tensor.float() if tensor.dtype != torch.bool else tensor.to(torch.uint8)
            data = tensor.detach().cpu().numpy()
        return data if data.dtype == self.dtype else data.astype(self.dtype)

    def read(self, k0: int, k1: int) -> np.ndarray:
        """Slices ``k0:k1`` (along K) in zarr order, C-contiguous, as the stored dtype."""
        return np.ascontiguousarray(self.layout.to_zarr(self.read_cijk(k0, k1)))


class _Writer:
    def __init__(
        self, image: Any, path: str, *, chunk: Any, shard: Any, codec: str,
        compression_level: int | None, levels: int | None, method: str | None,
        zarr_format: int, label: bool | None, progress: bool | None,
    ) -> None:  # fmt: skip
        self.path = os.fspath(path).rstrip("/")
        if is_remote(self.path):
            raise VoxelflowValueError(
                f"{self.path}: writing NIfTI-Zarr to a remote URI is not supported (no atomic "
                "rename on object storage); write locally, then upload (e.g. aws s3 sync)"
            )
        check_choice("codec", codec, CODECS)
        if zarr_format not in ZARR_FORMATS:
            raise VoxelflowValueError(f"{self.path}: zarr_format={zarr_format!r} must be 2 or 3")
        self.label = image.type == "label" if label is None else bool(label)
        method = method or ("majority" if self.label else "mean")
        check_choice("method", method, METHODS)
        if self.label and method == "mean":
            raise VoxelflowValueError(
                f"{self.path}: method='mean' would invent labels in a label map's pyramid; use "
                "method='majority' or 'nearest' (or label=False if the data are not labels)"
            )
        self.chunk_ijk = _triple("chunk", chunk, self.path)
        self.shard_ijk = None if shard is None else _triple("shard", shard, self.path)
        if self.shard_ijk is not None:
            if zarr_format == 2:
                raise VoxelflowValueError(
                    f"{self.path}: shard= needs zarr_format=3 (Zarr v2 has no sharding)"
                )
            bad = [s for s, c in zip(self.shard_ijk, self.chunk_ijk, strict=True) if s % c]
            if bad:
                raise VoxelflowValueError(
                    f"{self.path}: shard={shard!r} must be a multiple of chunk={chunk!r} on each "
                    "axis"
                )
        if compression_level is not None and codec == "none":
            raise VoxelflowValueError(f"{self.path}: compression_level needs a codec, not 'none'")
        if levels is not None and (not isinstance(levels, int | np.integer) or levels < 1):
            raise VoxelflowValueError(f"{self.path}: levels={levels!r} must be an int >= 1")
        self.codec = codec
        self.compression_level = compression_level
        self.method = method
        self.zarr_format = int(zarr_format)
        self.progress = progress
        self.source = SlabSource(image, self.label)
        spatial = tuple(image.shape[1:])
        self.spatial_zyx = spatial[::-1]
        chunk_zyx = self.chunk_ijk[::-1]
        wanted = levels or default_levels(self.spatial_zyx, chunk_zyx)
        self.shapes = _pyramid_shapes(self.spatial_zyx, int(wanted))
        self.image = image

    # ------------------------------------------------------------------ codecs
    def _compressors(self) -> Any:
        level = self.compression_level
        if self.codec == "none":
            return None
        if self.zarr_format == 3:
            from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

            if self.codec == "blosc":
                return BloscCodec(
                    cname="lz4", clevel=5 if level is None else level, shuffle="shuffle"
                )
            if self.codec == "zstd":
                return ZstdCodec(level=3 if level is None else level)
            return GzipCodec(level=6 if level is None else level)
        import numcodecs

        if self.codec == "blosc":
            return numcodecs.Blosc(cname="lz4", clevel=5 if level is None else level, shuffle=1)
        if self.codec == "zstd":
            return numcodecs.Zstd(level=3 if level is None else level)
        return numcodecs.Zlib(level=6 if level is None else level)

    # ------------------------------------------------------------------ metadata
    def _multiscales(self, pixdim_zyx: Sequence[float], units: tuple[str, str]) -> dict[str, Any]:
        axes_meta = []
        space_unit = _OME_UNITS.get(units[0], "") or "millimeter"
        time_unit = _OME_UNITS.get(units[1], "") or "second"
        for name in self.source.layout.axes:
            if name in "zyx":
                axes_meta.append({"name": name, "type": "space", "unit": space_unit})
            elif name == "t":
                axes_meta.append({"name": name, "type": "time", "unit": time_unit})
            else:
                axes_meta.append({"name": name, "type": "channel"})
        lead = len(self.source.layout.axes) - 3
        datasets = []
        for n in range(len(self.shapes)):
            factor = self._cumulative_factors(n)
            scale = [1.0] * lead + [p * f for p, f in zip(pixdim_zyx, factor, strict=True)]
            shift = [0.0] * lead + [
                p * (f - 1) / 2 for p, f in zip(pixdim_zyx, factor, strict=True)
            ]
            datasets.append(
                {
                    "path": str(n),
                    "coordinateTransformations": [
                        {"type": "scale", "scale": scale},
                        {"type": "translation", "translation": shift},
                    ],
                }
            )
        time_scale = (
            float(self.source.header.get_zooms()[3]) if "t" in self.source.layout.axes else 1.0
        )
        global_scale = [time_scale if a == "t" else 1.0 for a in self.source.layout.axes]
        multiscale: dict[str, Any] = {
            "name": "",
            "type": f"{self.method} window 2x2x2",
            "axes": axes_meta,
            "datasets": datasets,
            "coordinateTransformations": [{"type": "scale", "scale": global_scale}],
        }
        return multiscale

    def _cumulative_factors(self, n: int) -> tuple[int, int, int]:
        factors = [1, 1, 1]
        for level in range(1, n + 1):
            for axis in range(3):
                if self.shapes[level - 1][axis] > 1:
                    factors[axis] *= 2
        return tuple(factors)  # type: ignore[return-value]

    # ------------------------------------------------------------------ run
    def run(self) -> None:
        import zarr
        from tqdm.auto import tqdm
        from zarr.storage import LocalStore

        source = self.source
        header = source.header
        layout = source.layout
        lead = layout.zarr_shape((1, 1, 1))[: len(layout.axes) - 3]
        chunk_zyx = self.chunk_ijk[::-1]
        shard_zyx = None if self.shard_ijk is None else self.shard_ijk[::-1]
        zooms = header.get_zooms()
        pixdim_zyx = [float(z) or 1.0 for z in zooms[:3]][::-1]
        units = header.get_xyzt_units()
        total = int(np.prod(self.spatial_zyx)) * layout.channels * source.dtype.itemsize
        with atomic_target(self.path) as tmp:
            store = LocalStore(tmp)
            group = zarr.open_group(store, mode="w", zarr_format=self.zarr_format)  # type: ignore[arg-type]
            levels: list[_Level] = []
            for n, shape in enumerate(self.shapes):
                chunks = tuple(min(c, s) for c, s in zip(chunk_zyx, shape, strict=True))
                shards = None
                if shard_zyx is not None:
                    shards = tuple(
                        min(sh, -(-s // c) * c)
                        for sh, s, c in zip(shard_zyx, shape, chunks, strict=True)
                    )
                    shards = tuple(
                        max(c, (sh // c) * c) for sh, c in zip(shards, chunks, strict=True)
                    )
                array = self._create(
                    group,
                    str(n),
                    (*lead, *shape),
                    (*lead_chunks(lead), *chunks),
                    shards and (*lead_chunks(lead), *shards),
                )
                factors = tuple(2 if s > 1 else 1 for s in self.shapes[n - 1]) if n else (1, 1, 1)
                slab_depth = (shards or chunks)[0]
                levels.append(_Level(array, factors, slab_depth, []))  # type: ignore[arg-type]
            step = levels[0].slab
            depth = self.spatial_zyx[0]
            bar = tqdm(
                total=total, unit="B", unit_scale=True, desc=f"writing {os.path.basename(self.path)}",
                disable=(None if self.progress is None else not self.progress), leave=False,
            )  # fmt: skip
            try:
                for k0 in range(0, depth, step):
                    k1 = min(depth, k0 + step)
                    slab = source.read(k0, k1)
                    self._push(levels, 0, slab, final=False)
                    bar.update(slab.nbytes)
                self._push(levels, 0, None, final=True)
            finally:
                bar.close()
            group.attrs.update(self._group_attrs(pixdim_zyx, units))
            self._write_header(group, header)

    def _group_attrs(self, pixdim_zyx: Sequence[float], units: tuple[str, str]) -> dict[str, Any]:
        multiscale = self._multiscales(pixdim_zyx, units)
        marker = {COMPLETE_ATTR: {"complete": True, "writer": "voxelflow"}}
        if self.zarr_format == 3:
            return {"ome": {"version": "0.5", "multiscales": [multiscale]}, **marker}
        multiscale["version"] = "0.4"
        return {"multiscales": [multiscale], **marker}

    def _create(
        self,
        group: Any,
        name: str,
        shape: tuple[int, ...],
        chunks: tuple[int, ...],
        shards: tuple[int, ...] | None,
    ) -> Any:
        from zarr.core.chunk_key_encodings import ChunkKeyEncodingParams

        axes = list(self.source.layout.axes)
        kwargs: dict[str, Any] = {
            "name": name, "shape": shape, "chunks": chunks, "dtype": self.source.dtype,
            "compressors": self._compressors(), "fill_value": 0,
            "attributes": {"_ARRAY_DIMENSIONS": axes},
            "config": {"write_empty_chunks": True},
        }  # fmt: skip
        if self.zarr_format == 3:
            kwargs["dimension_names"] = axes
            kwargs["chunk_key_encoding"] = ChunkKeyEncodingParams(name="default", separator="/")
            if shards is not None:
                kwargs["shards"] = shards
        else:
            kwargs["chunk_key_encoding"] = ChunkKeyEncodingParams(name="v2", separator="/")
        return group.create_array(**kwargs)

    def _write_header(self, group: Any, header: Any) -> None:
        from zarr.core.chunk_key_encodings import ChunkKeyEncodingParams

        stream = io.BytesIO()
        header.write_to(stream)
        raw = np.frombuffer(stream.getvalue(), dtype=np.uint8)
        if len(header.extensions) == 0:
            raw = raw[: int(header.sizeof_hdr)]
        encoding = ChunkKeyEncodingParams(
            name="default" if self.zarr_format == 3 else "v2", separator="/"
        )
        array = group.create_array(
            name="nifti", shape=raw.shape, chunks=raw.shape, dtype=np.uint8, compressors=None,
            fill_value=0, chunk_key_encoding=encoding, attributes=header_json(header),
        )  # fmt: skip
        array[...] = raw

    def _push(self, levels: list[_Level], n: int, slices: np.ndarray | None, final: bool) -> None:
        """Give ``slices`` (zarr order, z = axis -3) to level ``n``; write whole slabs."""
        level = levels[n]
        if slices is not None and slices.shape[-3]:
            level.pending.append(slices)
        buffered = sum(p.shape[-3] for p in level.pending)
        while buffered >= level.slab or (final and buffered):
            data = (
                np.concatenate(level.pending, axis=-3)
                if len(level.pending) > 1
                else level.pending[0]
            )
            take = min(level.slab, data.shape[-3])
            out, rest = data[..., :take, :, :], data[..., take:, :, :]
            z0 = level.written
            level.array[(Ellipsis, slice(z0, z0 + take), slice(None), slice(None))] = out
            level.written += take
            level.pending = [rest] if rest.shape[-3] else []
            buffered -= take
            if n + 1 < len(levels):
                self._push(
                    levels, n + 1, self._downsample(levels[n + 1], out, final=False), final=False
                )
        if final and n + 1 < len(levels):
            self._push(levels, n + 1, self._downsample(levels[n + 1], None, final=True), final=True)

    def _downsample(
        self, target: _Level, slices: np.ndarray | None, final: bool
    ) -> np.ndarray | None:
        """Downsample incoming slices for ``target``, keeping an odd z slice for its pair."""
        parts = [p for p in (target.carry, slices) if p is not None]
        target.carry = None
        if not parts:
            return None
        data = np.concatenate(parts, axis=-3) if len(parts) > 1 else parts[0]
        fz = target.factors[0]
        if fz == 2:
            usable = data.shape[-3] - data.shape[-3] % 2
            if not final and usable < data.shape[-3]:
                target.carry = data[..., usable:, :, :].copy()
                data = data[..., :usable, :, :]
            if data.shape[-3] == 0:
                return None
        data = _pad_even(data, target.factors)
        return _reduce(data, target.factors, self.method)


def lead_chunks(lead: Sequence[int]) -> tuple[int, ...]:
    """Non-spatial axes (t, c) are chunked one value at a time."""
    return tuple(1 for _ in lead)
