"""Label transforms: ``OneHot``, ``RemapLabels``, ``RemoveLabels``, ``SequentialLabels``,
``KeepLargestComponent``.

They change label maps only (intensity images pass through; naming one in
``include=`` is an error), and labels stay labels: values are only ever
replaced by other labels, never interpolated. All but
``KeepLargestComponent`` are lazy: a patch reads its own region of the label
map. ``SequentialLabels`` and ``OneHot`` without ``num_classes`` first find the
labels present in one streaming pass over the map (bounded memory, cached).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch

from voxelflow._errors import VoxelflowTypeError, VoxelflowValueError
from voxelflow.image import INTENSITY, LABEL, Image
from voxelflow.subject import Subject
from voxelflow.transforms.compose import Compose
from voxelflow.transforms.intensity.base import describe, map_lazily, region_source, unchanged
from voxelflow.transforms.lazy import Region
from voxelflow.transforms.statistics import Selection, moments, unique_values
from voxelflow.transforms.transform import Transform, image_tensor

Pairs = list[list[float]]


class LabelTransform(Transform):
    """Base of label transforms: the label maps of a subject, each transformed alone.

    Subclasses implement :meth:`transform_image` and, for facts of the whole map
    (the labels present), :meth:`prepare`.

    Example:
        >>> import torch, voxelflow as tio
        >>> subject = tio.Subject(t1=tio.ScalarImage(torch.rand(1, 2, 2, 2)),
        ...                       seg=tio.LabelMap(torch.ones(1, 2, 2, 2, dtype=torch.uint8)))
        >>> out = tio.RemapLabels({1: 4})(subject)
        >>> out.seg.data.unique().tolist(), out.t1 is subject.t1
        ([4], True)
    """

    def images_to_change(self, subject: Subject) -> dict[str, Image]:
        """The label maps to transform; an intensity image named in ``include`` is an error."""
        if self.include is not None:
            for name in self.include:
                image = subject.get(name)
                if isinstance(image, Image) and image.type == INTENSITY:
                    raise VoxelflowTypeError(
                        f"{type(self).__name__}: {describe(name, image)} is an intensity image, "
                        f"and {type(self).__name__} changes label maps only; remove {name!r} "
                        "from include=, or load it as a tio.LabelMap if its values are labels"
                    )
        return self.images_to_transform(subject, (LABEL,))

    def apply_transform(self, subject: Subject, params: dict[str, Any]) -> Subject:
        images = self.images_to_change(subject)
        if not images:
            return subject
        self.prepare(subject, images, params)
        return self.replace(
            subject,
            {name: self.transform_image(name, image, params) for name, image in images.items()},
        )

    def prepare(self, subject: Subject, images: dict[str, Image], params: dict[str, Any]) -> None:
        """Whole-map facts the mapping needs (labels present), recorded in ``params``."""

    def transform_image(self, name: str, image: Image, params: dict[str, Any]) -> Image:
        raise NotImplementedError


# ---------------------------------------------------------------------- remapping
def fitting_dtype(dtype: torch.dtype, values: Sequence[float]) -> torch.dtype:
    """``dtype`` if it holds every one of ``values``, else the smallest that does."""
    if dtype.is_floating_point or not values:
        return dtype
    if all(float(v).is_integer() for v in values):
        low, high = min(values), max(values)
        candidates = [dtype, torch.int16, torch.int32, torch.int64]
        for candidate in candidates:
            info = torch.iinfo(candidate) if candidate != torch.bool else None
            if info is not None and info.min <= low and high <= info.max:
                return candidate
    return torch.float32


def remap(
    data: torch.Tensor,
    region: Region,
    *,
    pairs: tuple[tuple[float, float], ...],
    dtype: torch.dtype,
) -> torch.Tensor:
    """Replace each ``old`` label by ``new`` (other values unchanged), in one lookup."""
    out = data.to(dtype)
    if not pairs:
        return out
    old = torch.tensor([p[0] for p in pairs], dtype=torch.float64, device=data.device)
    new = torch.tensor([p[1] for p in pairs], dtype=torch.float64, device=data.device)
    order = torch.argsort(old)
    old, new = old[order], new[order]
    values = data.to(torch.float64).contiguous()
    slot = torch.searchsorted(old, values).clamp_(max=len(old) - 1)
    found = old[slot] == values
    return torch.where(found, new[slot].to(dtype), out)


def _pairs(remapping: Mapping[float, float] | Sequence[Sequence[float]], owner: str) -> Pairs:
    items = remapping.items() if isinstance(remapping, Mapping) else remapping
    pairs: Pairs = []
    try:
        for old, new in items:
            pairs.append([float(old), float(new)])
    except (TypeError, ValueError) as error:
        raise VoxelflowTypeError(
            f"{owner}: remapping must be a dict {{old label: new label}} of numbers ({error})"
        ) from error
    olds = [p[0] for p in pairs]
    if len(set(olds)) != len(olds):
        raise VoxelflowValueError(f"{owner}: a label appears twice among the keys of {remapping!r}")
    return pairs


def _label(value: float) -> float | int:
    return int(value) if float(value).is_integer() else float(value)


class RemapLabels(LabelTransform):
    """Replace label values: ``remapping`` maps old labels to new ones; others are kept.

    Lazy (each region is looked up on its own). Invertible when the map is
    one-to-one (its inverse swaps keys and values); undoing a map that merges
    labels warns and leaves the labels as they are. The dtype grows if a new
    label does not fit in it.

    Args:
        remapping: ``{old: new}``, e.g. ``{2: 1, 3: 1}`` (merge) or ``{1: 2, 2: 1}`` (swap).
        **kwargs: ``p``, ``seed``, ``include``, ``exclude``.

    Example:
        >>> import torch, voxelflow as tio
        >>> seg = tio.LabelMap(torch.tensor([0, 1, 2, 3]).reshape(1, 4, 1, 1))
        >>> tio.RemapLabels({1: 2, 2: 1})(seg).data.flatten().tolist()
        [0, 2, 1, 3]
    """

    invertible = True

    def __init__(
        self, remapping: Mapping[float, float] | Sequence[Sequence[float]], **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.remapping = _pairs(remapping, type(self).__name__)

    def make_params(self, subject: Subject, generator: torch.Generator) -> dict[str, Any]:
        return {"remapping": [list(p) for p in self.remapping]}

    def transform_image(self, name: str, image: Image, params: dict[str, Any]) -> Image:
        pairs = tuple((float(a), float(b)) for a, b in params["remapping"] if a != b)
        if not pairs:
            return unchanged(image)
        dtype = fitting_dtype(image.dtype, [b for _, b in pairs])
        function = partial(remap, pairs=pairs, dtype=dtype)
        return map_lazily(image, function, dtype=dtype, key=("RemapLabels", pairs))

    def inverse(self, params: dict[str, Any]) -> Transform:
        pairs = params["remapping"]
        news = [b for _, b in pairs]
        if len(set(news)) != len(news):
            warnings.warn(
                f"{type(self).__name__}: the map {_as_dict(pairs)} merges labels, so it cannot "
                "be undone; the labels are left as they are",
                stacklevel=3,
            )
            return Compose([])
        return RemapLabels({b: a for a, b in pairs})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_as_dict(self.remapping)}, p={self.p})"


def _as_dict(pairs: Sequence[Sequence[float]]) -> dict[float | int, float | int]:
    return {_label(a): _label(b) for a, b in pairs}


class RemoveLabels(RemapLabels):
    """Set the given labels to ``background_label`` (a :class:`RemapLabels`; not invertible).

    Example:
        >>> import torch, voxelflow as tio
        >>> seg = tio.LabelMap(torch.tensor([0, 1, 2, 3]).reshape(1, 4, 1, 1))
        >>> tio.RemoveLabels([2, 3])(seg).data.flatten().tolist()
        [0, 1, 0, 0]
    """

    invertible = False

    def __init__(
        self, labels: Sequence[float], *, background_label: float = 0, **kwargs: Any
    ) -> None:
        self.labels = [float(v) for v in labels]
        self.background_label = float(background_label)
        super().__init__({label: background_label for label in self.labels}, **kwargs)


class SequentialLabels(LabelTransform):
    """Renumber the labels present to ``0, 1, 2...`` in increasing order (the smallest
    becomes 0, as in TorchIO).

    The labels present are found in one streaming pass over each map (cached);
    the renumbering, recorded in the history, is then applied lazily. Invertible.

    Example:
        >>> import torch, voxelflow as tio
        >>> seg = tio.LabelMap(torch.tensor([0, 5, 10, 5]).reshape(1, 4, 1, 1))
        >>> tio.SequentialLabels()(seg).data.flatten().tolist()
        [0, 1, 2, 1]
    """

    invertible = True

    def prepare(self, subject: Subject, images: dict[str, Image], params: dict[str, Any]) -> None:
        remappings = {}
        for name, image in images.items():
            present = unique_values(Selection(region_source(image), label=describe(name, image)))
            remappings[name] = [[value, float(new)] for new, value in enumerate(present)]
        params["remappings"] = remappings

    def transform_image(self, name: str, image: Image, params: dict[str, Any]) -> Image:
        pairs = tuple((float(a), float(b)) for a, b in params["remappings"][name] if a != b)
        if not pairs:
            return unchanged(image)
        dtype = fitting_dtype(image.dtype, [b for _, b in pairs])
        function = partial(remap, pairs=pairs, dtype=dtype)
        return map_lazily(image, function, dtype=dtype, key=("SequentialLabels", pairs))

    def inverse(self, params: dict[str, Any]) -> Transform:
        return Compose(
            [
                RemapLabels({b: a for a, b in pairs}, include=[name])
                for name, pairs in params["remappings"].items()
            ]
        )

    def __repr__(self) -> str:
        return f"SequentialLabels(p={self.p})"


# ---------------------------------------------------------------------- one-hot
def one_hot(data: torch.Tensor, region: Region, *, num_classes: int, label: str) -> torch.Tensor:
    """``(1, ...)`` labels to ``(num_classes, ...)`` indicator channels (same dtype)."""
    values = data[0] if data.dtype.is_floating_point else data[0].to(torch.int64)
    if values.numel():
        low, high = float(values.min()), float(values.max())
        whole = not values.is_floating_point() or bool((values == values.round()).all())
        if low < 0 or high >= num_classes or not whole:
            raise VoxelflowValueError(
                f"OneHot: {label} holds label values in [{_label(low)}, {_label(high)}], which are "
                f"not all integers in [0, {num_classes - 1}]; pass num_classes > {_label(high)}, "
                "or renumber with tio.SequentialLabels() first"
            )
    classes = torch.arange(num_classes, device=data.device, dtype=values.dtype)
    return (values[None] == classes.view(-1, 1, 1, 1)).to(data.dtype)


def argmax_channels(data: torch.Tensor, region: Region, *, dtype: torch.dtype) -> torch.Tensor:
    """The channel of largest value at each voxel (the inverse of one-hot)."""
    return data.argmax(dim=0, keepdim=True).to(dtype)


class OneHot(LabelTransform):
    """One channel per class: ``(1, I, J, K)`` labels become ``(num_classes, I, J, K)``
    with 1 where the voxel holds that class (the label map's dtype is kept, as in
    TorchIO 1.x).

    Lazy. With ``num_classes=-1`` the number of classes is the largest label
    plus one, found in one streaming pass over the map (cached). Invertible
    (argmax over the channels, back to the original dtype).

    Args:
        num_classes: number of classes (``-1``: from the data).
        **kwargs: ``p``, ``seed``, ``include``, ``exclude``.

    Example:
        >>> import torch, voxelflow as tio
        >>> seg = tio.LabelMap(torch.tensor([0, 2, 1]).reshape(1, 3, 1, 1))
        >>> tio.OneHot()(seg).data[:, :, 0, 0].tolist()
        [[1, 0, 0], [0, 0, 1], [0, 1, 0]]
    """

    invertible = True

    def __init__(self, num_classes: int = -1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if (
            isinstance(num_classes, bool)
            or not isinstance(num_classes, int)
            or (num_classes < 1 and num_classes != -1)
        ):
            raise VoxelflowValueError(
                f"OneHot num_classes must be a positive int or -1 (from the data), got "
                f"{num_classes!r}"
            )
        self.num_classes = num_classes

    def prepare(self, subject: Subject, images: dict[str, Image], params: dict[str, Any]) -> None:
        classes, dtypes = {}, {}
        for name, image in images.items():
            if image.num_channels != 1:
                raise VoxelflowValueError(
                    f"OneHot: {describe(name, image)} has {image.num_channels} channels; one-hot "
                    "encoding needs a single-channel label map (it may already be one-hot)"
                )
            count = self.num_classes
            if count == -1:
                stats = moments(Selection(region_source(image), label=describe(name, image)))
                if stats.minimum < 0 or not float(stats.maximum).is_integer():
                    raise VoxelflowValueError(
                        f"OneHot: {describe(name, image)} holds labels from {stats.minimum} to "
                        f"{stats.maximum}; one-hot needs integer labels >= 0 (renumber with "
                        "tio.SequentialLabels() first)"
                    )
                count = int(stats.maximum) + 1
            classes[name] = count
            dtypes[name] = str(image.dtype).replace("torch.", "")
        params["num_classes"], params["dtypes"] = classes, dtypes

    def transform_image(self, name: str, image: Image, params: dict[str, Any]) -> Image:
        count = int(params["num_classes"][name])
        function = partial(one_hot, num_classes=count, label=describe(name, image))
        return map_lazily(image, function, dtype=image.dtype, channels=count, key=("OneHot", count))

    def inverse(self, params: dict[str, Any]) -> Transform:
        return _ArgmaxChannels(params["dtypes"])

    def __repr__(self) -> str:
        return f"OneHot(num_classes={self.num_classes}, p={self.p})"


class _ArgmaxChannels(LabelTransform):
    """The inverse of :class:`OneHot`: argmax over channels, back to each map's dtype."""

    def __init__(self, dtypes: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dtypes = dict(dtypes)

    def apply_transform(self, subject: Subject, params: dict[str, Any]) -> Subject:
        names = [n for n in self.images_to_change(subject) if n in self.dtypes]
        return self.replace(
            subject,
            {
                name: self.transform_image(name, subject[name], params)
                for name in names
                if subject[name].num_channels > 1
            },
        )

    def transform_image(self, name: str, image: Image, params: dict[str, Any]) -> Image:
        dtype = getattr(torch, self.dtypes[name])
        function = partial(argmax_channels, dtype=dtype)
        return map_lazily(image, function, dtype=dtype, channels=1)


# ---------------------------------------------------------------------- components
class KeepLargestComponent(LabelTransform):
    """Keep only the largest connected component of each label; the other components
    become ``background_label``.

    Whole-volume (``scipy.ndimage.label`` on the whole map, read once): not lazy,
    not patchwise. Components of equal size: the first in scan order is kept.

    Args:
        labels: the labels to clean (default: every label but the background).
        background_label: the value of removed voxels.
        fully_connected: 26-connectivity (voxels touching by a corner are
            connected); ``False``: 6-connectivity (faces only).
        **kwargs: ``p``, ``seed``, ``include``, ``exclude``.

    Example:
        >>> import torch, voxelflow as tio
        >>> seg = tio.LabelMap(torch.tensor([1, 1, 0, 1, 2]).reshape(1, 5, 1, 1))
        >>> tio.KeepLargestComponent()(seg).data.flatten().tolist()
        [1, 1, 0, 0, 2]
    """

    patchwise = False

    def __init__(
        self,
        labels: Sequence[float] | None = None,
        *,
        background_label: float = 0,
        fully_connected: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.labels = None if labels is None else [float(v) for v in labels]
        self.background_label = float(background_label)
        self.fully_connected = bool(fully_connected)

    def transform_image(self, name: str, image: Image, params: dict[str, Any]) -> Image:
        from scipy import ndimage

        if image.num_channels != 1:
            raise VoxelflowValueError(
                f"KeepLargestComponent: {describe(name, image)} has {image.num_channels} "
                "channels; it needs a single-channel label map (argmax a one-hot map first)"
            )
        data = image_tensor(image)
        array = data[0].cpu().numpy()
        result = array.copy()
        present = np.unique(array) if self.labels is None else np.asarray(self.labels)
        structure = ndimage.generate_binary_structure(3, 3 if self.fully_connected else 1)
        for label in present.tolist():
            if label == self.background_label:
                continue
            components, count = ndimage.label(array == label, structure=structure)
            if count < 2:
                continue
            sizes = np.bincount(components.ravel())
            sizes[0] = 0
            largest = int(np.argmax(sizes))
            result[(components != largest) & (components != 0)] = self.background_label
        out = torch.from_numpy(result)[None].to(device=data.device, dtype=data.dtype)
        return image.new_like(out)

    def __repr__(self) -> str:
        return f"KeepLargestComponent(labels={self.labels}, p={self.p})"
