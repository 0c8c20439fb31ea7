"""NIfTI-Zarr layout and metadata, shared by the reader and the writer.

Owns how NIfTI dimensions map onto OME axes (:class:`Layout`: arrays are
stored in OME order ``(t, c, z, y, x)``, the reverse of NIfTI's
``(i, j, k, t, c)``, so ``x`` is ``i`` and ``z`` is ``k``; axes of size one may
be left out, except the three spatial ones), the OME ``multiscales``
metadata (written by :func:`multiscales`, read back by :func:`level_affine`
and :func:`check_levels`), and the JSON rendering of the NIfTI header that
the ``nifti`` array carries (:func:`header_json`, all 39 fields).

Channels: NIfTI's 4th dim is time (``t``) and its 5th holds vector
components (``c``). A volume with channels but no NIfTI header of its own
(a tensor, a model's output) is written with its channels on ``c``, as
NIfTI-Zarr and OME-Zarr describe channels (axis type ``"channel"``), never as
time points; a source file's header keeps its own dims.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np

from voxelflow._errors import VoxelflowValueError

#: Attribute a voxelflow-written store carries: ``{"complete": false}`` while it is
#: written, ``true`` once every chunk is (a missing chunk is then damage).
COMPLETE_ATTR = "voxelflow"


@dataclass(frozen=True)
class Layout:
    """How NIfTI dimensions map onto the OME axes of the zarr arrays.

    ``axes`` are the zarr axis names in storage order (a subsequence of
    ``t, c, z, y, x``); ``file_shape`` the NIfTI dims ``(I, J, K[, T[, C]])``.
    voxelflow channels are the NIfTI ``T × C`` values flattened in NIfTI
    (Fortran) order: channel ``t + T * c``.
    """

    axes: tuple[str, ...]
    file_shape: tuple[int, ...]

    @property
    def t(self) -> int:
        return self.file_shape[3] if len(self.file_shape) > 3 else 1

    @property
    def c(self) -> int:
        return self.file_shape[4] if len(self.file_shape) > 4 else 1

    @property
    def channels(self) -> int:
        return self.t * self.c

    def zarr_shape(self, spatial: Sequence[int]) -> tuple[int, ...]:
        """Zarr shape for spatial size ``(I, J, K)``."""
        sizes = {"t": self.t, "c": self.c, "x": spatial[0], "y": spatial[1], "z": spatial[2]}
        return tuple(sizes[a] for a in self.axes)

    def to_zarr(self, data: np.ndarray) -> np.ndarray:
        """``(C, I, J, K)`` (any layout) → array in zarr axis order (a view when possible)."""
        channels, i, j, k = data.shape
        five = data.reshape(self.c, self.t, i, j, k).transpose(1, 0, 4, 3, 2)  # t c z y x
        drop = tuple(n for n, a in enumerate("tczyx") if a not in self.axes)
        return five.reshape([s for n, s in enumerate(five.shape) if n not in drop])

    def from_zarr(self, data: np.ndarray) -> np.ndarray:
        """Array in zarr axis order → ``(C, I, J, K)`` (a view when possible)."""
        shape = list(data.shape)
        full = []
        for name in "tczyx":
            full.append(shape.pop(0) if name in self.axes else 1)
        five = data.reshape(full)  # t c z y x
        t, c, z, y, x = five.shape
        return five.transpose(1, 0, 4, 3, 2).reshape(c * t, x, y, z)


def layout_for(axes: Sequence[str], file_shape: Sequence[int], where: str) -> Layout:
    axes = tuple(str(a).lower() for a in axes)
    if not set(axes) <= set("tczyx") or not {"x", "y", "z"} <= set(axes):
        raise VoxelflowValueError(
            f"{where}: OME axes {list(axes)} are not NIfTI-Zarr axes (a subsequence of "
            "t, c, z, y, x with all of z, y, x); the store is not NIfTI-Zarr"
        )
    if list(axes) != [a for a in "tczyx" if a in axes]:
        raise VoxelflowValueError(
            f"{where}: OME axes {list(axes)} are not in the order t, c, z, y, x; "
            "re-convert the volume"
        )
    shape = tuple(int(n) for n in file_shape)
    if len(shape) < 3:
        shape = shape + (1,) * (3 - len(shape))
    if len(shape) > 5:
        raise VoxelflowValueError(f"{where}: NIfTI header has {len(shape)} dims; at most 5")
    layout = Layout(axes, shape)
    for name, size in (("t", layout.t), ("c", layout.c)):
        if name not in axes and size != 1:
            raise VoxelflowValueError(
                f"{where}: the NIfTI header has {name}={size} but the arrays have no "
                f"{name!r} axis; the header disagrees with the arrays; re-convert the volume"
            )
    return layout


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


# ============================================================================ OME multiscales
def pyramid_shapes(spatial_zyx: Sequence[int], levels: int) -> list[tuple[int, int, int]]:
    """Spatial ``(z, y, x)`` shapes of ``levels`` levels, halving (rounding up) each axis > 1."""
    z, y, x = (int(s) for s in spatial_zyx)
    shapes = [(z, y, x)]
    while len(shapes) < levels and shapes[-1] != (1, 1, 1):
        z, y, x = ((s + 1) // 2 if s > 1 else 1 for s in shapes[-1])
        shapes.append((z, y, x))
    return shapes


def default_levels(spatial: Sequence[int], chunk: Sequence[int]) -> int:
    """Levels until the coarsest fits in one chunk (the reference implementation's default)."""
    ratio = max(s / c for s, c in zip(spatial, chunk, strict=True))
    return max(1, int(math.ceil(math.log2(ratio))) + 1 if ratio > 1 else 1)


def cumulative_factors(shapes: Sequence[Sequence[int]], n: int) -> tuple[int, int, int]:
    """``(z, y, x)`` downsampling of level ``n`` from level 0."""
    factors = [1, 1, 1]
    for level in range(1, n + 1):
        for axis in range(3):
            if shapes[level - 1][axis] > 1:
                factors[axis] *= 2
    return factors[0], factors[1], factors[2]


def multiscales(
    layout: Layout,
    shapes: Sequence[Sequence[int]],
    pixdim_zyx: Sequence[float],
    units: tuple[str, str],
    *,
    time_scale: float,
    method: str,
) -> dict[str, Any]:
    """The OME ``multiscales`` entry of a pyramid of ``shapes`` (``(z, y, x)`` per level).

    Each level's scale is the voxel size times its factor, and its translation
    the half-voxel shift of averaging ``factor`` voxels into one.
    """
    space_unit = _OME_UNITS.get(units[0], "") or "millimeter"
    time_unit = _OME_UNITS.get(units[1], "") or "second"
    axes_meta: list[dict[str, Any]] = []
    for name in layout.axes:
        if name in "zyx":
            axes_meta.append({"name": name, "type": "space", "unit": space_unit})
        elif name == "t":
            axes_meta.append({"name": name, "type": "time", "unit": time_unit})
        else:
            axes_meta.append({"name": name, "type": "channel"})
    lead = len(layout.axes) - 3
    datasets = []
    for n in range(len(shapes)):
        factor = cumulative_factors(shapes, n)
        scale = [1.0] * lead + [p * f for p, f in zip(pixdim_zyx, factor, strict=True)]
        shift = [0.0] * lead + [p * (f - 1) / 2 for p, f in zip(pixdim_zyx, factor, strict=True)]
        datasets.append(
            {
                "path": str(n),
                "coordinateTransformations": [
                    {"type": "scale", "scale": scale},
                    {"type": "translation", "translation": shift},
                ],
            }
        )
    global_scale = [time_scale if a == "t" else 1.0 for a in layout.axes]
    return {
        "name": "",
        "type": f"{method} window 2x2x2",
        "axes": axes_meta,
        "datasets": datasets,
        "coordinateTransformations": [{"type": "scale", "scale": global_scale}],
    }


def _transforms(dataset: dict[str, Any], axes: Sequence[str]) -> tuple[np.ndarray, list[float]]:
    """A 4×4 (x, y, z) matrix from one OME dataset's scale and translation, and the scale."""
    scale = [1.0] * len(axes)
    shift = [0.0] * len(axes)
    for transform in dataset.get("coordinateTransformations", []):
        if transform.get("type") == "scale":
            scale = [float(s) for s in transform["scale"]]
        elif transform.get("type") == "translation":
            shift = [float(s) for s in transform["translation"]]
    matrix = np.eye(4)
    for row, name in enumerate("xyz"):
        n = list(axes).index(name)
        matrix[row, row] = scale[n]
        matrix[row, 3] = shift[n]
    return matrix, scale


def level_affine(
    affine0: np.ndarray, datasets: list[dict[str, Any]], axes: Sequence[str], level: int
) -> np.ndarray:
    """Affine of pyramid ``level``: ``affine0 @ inv(P0) @ Pn`` with OME scale/translation ``P``."""
    if level == 0:
        return np.asarray(affine0, dtype=np.float64)
    p0, _ = _transforms(datasets[0], axes)
    pn, _ = _transforms(datasets[level], axes)
    return np.asarray(affine0, dtype=np.float64) @ np.linalg.inv(p0) @ pn


def check_levels(
    where: str,
    datasets: list[dict[str, Any]],
    axes: Sequence[str],
    shapes: Sequence[Sequence[int]],
) -> None:
    """Refuse a pyramid level whose shape disagrees with level 0 and the OME scales.

    Level ``n`` must hold level 0's extent: along each spatial axis, its size
    times its scale ratio to level 0 is within one voxel of level 0's size;
    along ``t`` and ``c`` it has level 0's size.
    """
    _, scale0 = _transforms(datasets[0], axes)
    for n in range(1, len(shapes)):
        _, scale = _transforms(datasets[n], axes)
        for axis, name in enumerate(axes):
            size0, size = int(shapes[0][axis]), int(shapes[n][axis])
            if name in "tc":
                ok = size == size0
            else:
                ratio = scale[axis] / scale0[axis] if scale0[axis] else 0.0
                ok = ratio > 0 and abs(size * ratio - size0) <= ratio
            if not ok:
                raise VoxelflowValueError(
                    f"{where}: pyramid level {n} ({datasets[n].get('path')!r}) has {size} values "
                    f"on axis {name!r}, which does not match level 0's {size0} at its scale; the "
                    "pyramid is inconsistent; re-convert the volume"
                )
