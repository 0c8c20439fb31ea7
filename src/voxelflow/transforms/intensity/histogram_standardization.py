"""``HistogramStandardization`` (Nyúl and Udupa, 1999): training of landmarks and the map.

Training (:func:`compute_histogram_landmarks`, or TorchIO 1.x's
``HistogramStandardization.train``) takes, for each training image, the
percentiles at the cutoff quantiles (default 1 % and 99 %), the deciles and the
quartiles (13 values), maps each image's range ``[p_low, p_high]`` linearly to
``[0, 100]``, and averages the mapped percentiles: the landmarks. Applying
them maps an image's own percentiles onto the landmarks, piecewise linearly
(TorchIO 2.0's map: every landmark, outer segments extended).

Percentiles are exact (``numpy.percentile``'s) and streamed over each image in
bounded memory (:mod:`voxelflow.transforms.statistics`): training never holds
more than one slab of one image, and applying reads the image's statistics in
streaming passes (cached) and then maps it lazily.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from voxelflow._errors import (
    VoxelflowFileNotFoundError,
    VoxelflowKeyError,
    VoxelflowTypeError,
    VoxelflowValueError,
)
from voxelflow.image import Image, ScalarImage
from voxelflow.subject import Subject
from voxelflow.transforms.intensity.base import (
    IntensityTransform,
    describe,
    float_dtype,
    map_lazily,
    region_source,
)
from voxelflow.transforms.intensity.masking import (
    MaskingMethod,
    check_masking_method,
    selection,
)
from voxelflow.transforms.lazy import Region
from voxelflow.transforms.statistics import Selection, quantiles

DEFAULT_CUTOFF: tuple[float, float] = (0.01, 0.99)
STANDARD_RANGE: tuple[float, float] = (0.0, 100.0)
_DECILES_AND_QUARTILES = (0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9)

Landmarks = torch.Tensor | np.ndarray | Sequence[float] | str | os.PathLike[str]


def landmark_quantiles(cutoff: Sequence[float] = DEFAULT_CUTOFF) -> tuple[float, ...]:
    """The quantiles whose percentiles are the landmarks: the cutoffs, deciles, quartiles."""
    low, high = (float(c) for c in cutoff)
    if not 0.0 <= low < high <= 1.0:
        raise VoxelflowValueError(
            f"HistogramStandardization: cutoff must be two quantiles 0 <= low < high <= 1, got "
            f"{tuple(cutoff)!r}; the default is {DEFAULT_CUTOFF}"
        )
    return tuple(sorted({low, high, *_DECILES_AND_QUARTILES}))


def average_mapping(percentiles: np.ndarray) -> np.ndarray:
    """The landmarks from an ``(images, quantiles)`` table of percentiles (Nyúl and Udupa)."""
    low, high = percentiles[:, 0], percentiles[:, -1]
    s_low, s_high = STANDARD_RANGE
    with np.errstate(divide="ignore", invalid="ignore"):
        slopes = np.nan_to_num((s_high - s_low) / (high - low))
    intercept = float(np.mean(s_low - slopes * low))
    return np.asarray(slopes @ percentiles / len(percentiles) + intercept, dtype=np.float64)


def _training_selection(
    source: Image | str | os.PathLike[str],
    mask: Image | str | os.PathLike[str] | None,
    masking_function: Callable[[torch.Tensor], torch.Tensor] | None,
) -> Selection:
    image = source if isinstance(source, Image) else ScalarImage(source)
    label = str(image.path or "image")
    mask_source: Any = None
    if masking_function is not None:
        mask_source = torch.as_tensor(masking_function(image.data)).to("cpu", torch.bool)
    elif mask is not None:
        mask_image = mask if isinstance(mask, Image) else ScalarImage(mask)
        mask_source = region_source(mask_image)
    return Selection(region_source(image), mask_source, label=f"HistogramStandardization: {label}")


def compute_histogram_landmarks(
    images: Sequence[Image | str | os.PathLike[str]],
    *,
    cutoff: Sequence[float] = DEFAULT_CUTOFF,
    masking_method: Callable[[torch.Tensor], torch.Tensor] | None = None,
    masks: Sequence[Image | str | os.PathLike[str]] | Image | str | os.PathLike[str] | None = None,
    output_path: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """The landmarks of a set of training images (TorchIO 2.0's function).

    Args:
        images: images or paths (read in streaming passes, never whole).
        cutoff: the lowest and highest quantiles used (default 1 % and 99 %).
        masking_method: a function of each image's tensor returning the voxels to
            use (the image is then read whole once).
        masks: a mask (image or path) for every image, or one for all: their
            non-zero voxels are used.
        output_path: save the landmarks there (``.npy``, ``.pt``, ``.txt`` or
            ``.json``; see :func:`save_landmarks`).
        progress: show a progress bar.

    Returns:
        The landmarks, float64, one per quantile of :func:`landmark_quantiles`.
    """
    if not images:
        raise VoxelflowValueError("HistogramStandardization: no training images given")
    qs = landmark_quantiles(cutoff)
    if masks is None or isinstance(masks, Image | str | os.PathLike):
        mask_list: list[Any] = [masks] * len(images)
    else:
        mask_list = list(masks)
        if len(mask_list) != len(images):
            raise VoxelflowValueError(
                f"HistogramStandardization: {len(images)} images but {len(mask_list)} masks; "
                "pass one mask per image, or a single mask for all"
            )
    rows = []
    for source, mask in tqdm(
        list(zip(images, mask_list, strict=True)),
        desc="histogram landmarks",
        disable=not progress,
    ):
        rows.append(quantiles(_training_selection(source, mask, masking_method), qs))
    landmarks = torch.from_numpy(average_mapping(np.asarray(rows, dtype=np.float64)))
    if output_path is not None:
        save_landmarks(landmarks, output_path)
    return landmarks


def save_landmarks(
    landmarks: torch.Tensor | np.ndarray | Mapping[str, Any], path: str | os.PathLike[str]
) -> None:
    """Write landmarks (or ``{image name: landmarks}``) to ``.npy``, ``.pt``/``.pth``,
    ``.txt`` (space-separated, TorchIO 1.x's layout with a leading name) or ``.json``."""
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if isinstance(landmarks, Mapping):
        table = {
            str(k): np.asarray(torch.as_tensor(v), dtype=np.float64) for k, v in landmarks.items()
        }
        if suffix in (".pt", ".pth"):
            torch.save({k: torch.from_numpy(v) for k, v in table.items()}, path)
        elif suffix == ".json":
            path.write_text(json.dumps({k: v.tolist() for k, v in table.items()}))
        else:
            raise VoxelflowValueError(
                f"{path}: a dictionary of landmarks is saved as .pt, .pth or .json"
            )
        return
    values = np.asarray(torch.as_tensor(landmarks), dtype=np.float64)
    if suffix == ".npy":
        np.save(path, values)
    elif suffix in (".pt", ".pth"):
        torch.save(torch.from_numpy(values), path)
    elif suffix == ".txt":
        path.write_text("image " + " ".join(repr(float(v)) for v in values))
    elif suffix == ".json":
        path.write_text(json.dumps(values.tolist()))
    else:
        raise VoxelflowValueError(
            f"{path}: landmarks are saved as .npy, .pt, .pth, .txt or .json, not {suffix!r}"
        )


def load_landmarks(source: Landmarks) -> torch.Tensor | dict[str, torch.Tensor]:
    """Landmarks from a tensor, an array, a list, or a file written by :func:`save_landmarks`
    (``.pt`` files are read with ``weights_only=True``: no code runs from a data file)."""
    if isinstance(source, str | os.PathLike):
        path = Path(source).expanduser()
        if not path.is_file():
            raise VoxelflowFileNotFoundError(
                f"{path}: no such landmarks file; train landmarks with "
                "HistogramStandardization.train(paths, output_path=...)"
            )
        suffix = path.suffix.lower()
        if suffix == ".npy":
            loaded: Any = np.load(path, allow_pickle=False)
        elif suffix in (".pt", ".pth"):
            loaded = torch.load(path, weights_only=True)
        elif suffix == ".txt":
            words = path.read_text().split()
            try:
                loaded = (
                    [float(w) for w in words[1:]]
                    if words and not _is_number(words[0])
                    else [float(w) for w in words]
                )
            except ValueError as error:
                raise VoxelflowValueError(f"{path}: not a landmarks text file ({error})") from error
        elif suffix == ".json":
            loaded = json.loads(path.read_text())
        else:
            raise VoxelflowValueError(
                f"{path}: landmarks are read from .npy, .pt, .pth, .txt or .json, not {suffix!r}"
            )
        if isinstance(loaded, Mapping):
            return {str(k): _as_landmarks(load_landmarks(v), str(path)) for k, v in loaded.items()}  # type: ignore[arg-type]
        return _as_landmarks(loaded, str(path))
    if isinstance(source, Mapping):
        return {str(k): _as_landmarks(load_landmarks(v), str(k)) for k, v in source.items()}  # type: ignore[arg-type]
    return _as_landmarks(source, "landmarks")


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def _as_landmarks(values: Any, what: str) -> torch.Tensor:
    try:
        tensor = torch.as_tensor(np.asarray(values, dtype=np.float64))
    except (TypeError, ValueError) as error:
        raise VoxelflowTypeError(f"{what}: landmarks must be numbers ({error})") from error
    if tensor.ndim != 1 or len(tensor) < 2 or not bool(torch.all(tensor[1:] >= tensor[:-1])):
        raise VoxelflowValueError(
            f"{what}: landmarks must be an increasing list of at least two numbers, got shape "
            f"{tuple(tensor.shape)}"
        )
    return tensor


def piecewise_linear(
    data: torch.Tensor,
    region: Region,
    *,
    inputs: tuple[float, ...],
    landmarks: tuple[float, ...],
) -> torch.Tensor:
    """Map the image's percentiles ``inputs`` onto ``landmarks``, linearly between them
    (the outer segments extended; flat input segments are skipped, as TorchIO does)."""
    x_points = torch.tensor(inputs, dtype=torch.float64, device=data.device)
    y_points = torch.tensor(landmarks, dtype=torch.float64, device=data.device)
    dx = torch.diff(x_points)
    dx = torch.where(dx.abs() < 1e-5, torch.full_like(dx, torch.inf), dx)
    slopes = torch.diff(y_points) / dx
    intercepts = y_points[:-1] - slopes * x_points[:-1]
    x = data.to(torch.float64).contiguous()
    segment = torch.bucketize(x, x_points[1:-1].contiguous(), right=False)
    out = slopes[segment] * x + intercepts[segment]
    return out.to(float_dtype(data.dtype))


class HistogramStandardization(IntensityTransform):
    """Map each image's histogram onto trained landmarks (Nyúl and Udupa).

    Accepts TorchIO 2.0's and 1.x's call shapes: landmarks for the images
    ``include`` names (a tensor, array, list or file), or a dictionary
    ``{image name: landmarks or file}`` (or a ``.pt``/``.json`` file holding
    one). Lazy after a streaming statistics pass (the image's percentiles,
    exact, cached); not patchwise.

    Args:
        landmarks: see above; train them with :meth:`train` or
            :func:`compute_histogram_landmarks`.
        cutoff: the quantiles the landmarks were trained with.
        masking_method: voxels the image's percentiles are computed on (as
            TorchIO 1.x; default: every voxel).
        **kwargs: ``p``, ``seed``, ``include``, ``exclude``.

    Example:
        >>> import torch, voxelflow as tio
        >>> images = [tio.ScalarImage(torch.rand(1, 8, 8, 8) * s) for s in (1, 3)]
        >>> landmarks = tio.HistogramStandardization.train(images, progress=False)
        >>> out = tio.HistogramStandardization(landmarks)(images[1])
        >>> round(float(out.data.quantile(0.5)), 1) == round(float(landmarks[6]), 1)
        True
    """

    patchwise = False

    def __init__(
        self,
        landmarks: Landmarks | Mapping[str, Landmarks],
        cutoff: Sequence[float] = DEFAULT_CUTOFF,
        masking_method: MaskingMethod = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.cutoff = tuple(float(c) for c in cutoff)
        self.quantiles = landmark_quantiles(self.cutoff)
        self.landmarks = load_landmarks(landmarks)  # type: ignore[arg-type]
        for what, values in self._all_landmarks().items():
            if len(values) != len(self.quantiles):
                raise VoxelflowValueError(
                    f"HistogramStandardization: {len(values)} landmarks for {what}, but cutoff "
                    f"{self.cutoff} gives {len(self.quantiles)} quantiles; train and apply with "
                    "the same cutoff"
                )
        self.masking_method = check_masking_method("HistogramStandardization", masking_method)

    def _all_landmarks(self) -> dict[str, torch.Tensor]:
        if isinstance(self.landmarks, dict):
            return self.landmarks
        return {"the images": self.landmarks}

    @classmethod
    def train(
        cls,
        images_paths: Sequence[Image | str | os.PathLike[str]],
        cutoff: Sequence[float] | None = None,
        mask_path: Sequence[Image | str | os.PathLike[str]] | str | os.PathLike[str] | None = None,
        masking_function: Callable[[torch.Tensor], torch.Tensor] | None = None,
        output_path: str | os.PathLike[str] | None = None,
        *,
        progress: bool = True,
    ) -> torch.Tensor:
        """TorchIO 1.x's training call: see :func:`compute_histogram_landmarks`.

        ``mask_path`` is one mask for all images or one per image.
        """
        return compute_histogram_landmarks(
            images_paths,
            cutoff=DEFAULT_CUTOFF if cutoff is None else cutoff,
            masking_method=masking_function,
            masks=mask_path,
            output_path=output_path,
            progress=progress,
        )

    def landmarks_for(self, name: str, image: Image) -> torch.Tensor:
        if not isinstance(self.landmarks, dict):
            return self.landmarks
        if name not in self.landmarks:
            raise VoxelflowKeyError(
                f"HistogramStandardization: no landmarks for {describe(name, image)}; the "
                f"landmarks are for {', '.join(map(repr, self.landmarks))}. Pass "
                f"include={list(self.landmarks)!r} or add landmarks for {name!r}"
            )
        return self.landmarks[name]

    def intensity_images(self, subject: Subject) -> dict[str, Image]:
        images = super().intensity_images(subject)
        if isinstance(self.landmarks, dict) and self.include is None:
            return {n: i for n, i in images.items() if n in self.landmarks}
        return images

    def prepare(self, subject: Subject, images: dict[str, Image], params: dict[str, Any]) -> None:
        inputs = {}
        for name, image in images.items():
            self.landmarks_for(name, image)
            chosen = selection(
                "HistogramStandardization", self.masking_method, subject, name, image
            )
            inputs[name] = quantiles(chosen, self.quantiles)
        params["percentiles"] = inputs

    def transform_image(
        self, name: str, image: Image, subject: Subject, params: dict[str, Any]
    ) -> Image:
        landmarks = tuple(float(v) for v in self.landmarks_for(name, image))
        inputs = tuple(float(v) for v in params["percentiles"][name])
        function = partial(piecewise_linear, inputs=inputs, landmarks=landmarks)
        key = ("HistogramStandardization", inputs, landmarks)
        return map_lazily(image, function, dtype=float_dtype(image.dtype), key=key)

    def __repr__(self) -> str:
        return f"HistogramStandardization(cutoff={self.cutoff}, p={self.p})"
