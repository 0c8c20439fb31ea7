"""``IntensityTransform``: the base of transforms that change intensities, lazily.

An intensity transform touches intensity images only (``ScalarImage``); label
maps pass through untouched, and naming one in ``include=`` is an error. Its
result is an image over a :class:`~voxelflow.transforms.lazy.RegionMapBackend`:
nothing is computed until a region is read, and a region (a patch) is
computed from the same region of the input, plus a halo for neighbourhood
operations, by the same code that computes the whole volume. Integer
intensities become float32.

Images held on another device than the CPU (batches on a GPU) are
transformed at once, on their device, by the same region function applied to
the whole volume.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Sequence
from typing import Any

import torch

from voxelflow._errors import VoxelflowTypeError
from voxelflow._geometry import Triplet
from voxelflow.backends import BackendProtocol, TensorBackend
from voxelflow.image import INTENSITY, LABEL, Image
from voxelflow.subject import Subject
from voxelflow.transforms.lazy import Region, RegionFunction, RegionMapBackend
from voxelflow.transforms.transform import Transform


def float_dtype(dtype: torch.dtype) -> torch.dtype:
    """``dtype`` if it is floating, else float32 (what intensity transforms return)."""
    return dtype if dtype.is_floating_point else torch.float32


def describe(name: str, image: Image) -> str:
    """``'t1' (brain.nii.gz)``: how messages name an image of a subject."""
    return f"{name!r} ({image.path})" if image.path is not None else repr(name)


def region_source(image: Image) -> BackendProtocol:
    """The backend a lazy transform reads ``image`` through: its cached tensor when
    it is loaded (never re-read from the file), else its backend."""
    backend = image.dataobj
    if image.is_loaded and not backend.in_memory:
        return TensorBackend(image.data, image.affine)
    return backend


def on_device(image: Image) -> bool:
    """Whether ``image`` is held in memory on a device other than the CPU."""
    return image.is_loaded and image.data.device.type != "cpu"


def unchanged(image: Image) -> Image:
    """A copy of ``image`` for a transform that leaves it as it is: loading the copy never
    loads the caller's image."""
    twin = copy.copy(image)
    twin.metadata = dict(image.metadata)
    return twin


def map_lazily(
    image: Image,
    function: RegionFunction,
    *,
    dtype: torch.dtype,
    halo: int | Triplet = 0,
    border: str | float = "edge",
    channels: int | None = None,
    key: Hashable | None = None,
) -> Image:
    """``image`` mapped by ``function(data, region)`` region by region (see
    :class:`~voxelflow.transforms.lazy.RegionMapBackend`); on another device than
    the CPU, the whole volume at once with the same function."""
    halo3: Triplet = (halo, halo, halo) if isinstance(halo, int) else tuple(halo)  # type: ignore[assignment]
    if on_device(image):
        data = image.data
        shape = tuple(data.shape[1:])
        region = Region((0, 0, 0), shape, halo3, shape)  # type: ignore[arg-type]
        if any(halo3):
            data = _pad_on_device(data, halo3, border)
        return image.new_like(function(data, region).to(dtype))
    backend = RegionMapBackend(
        region_source(image),
        function,
        dtype=dtype,
        channels=channels,
        halo=halo3,
        border=border,
        affine=image.affine,
        key=key,
    )
    return image.lazy_like(backend)


def _pad_on_device(data: torch.Tensor, halo: Triplet, border: str | float) -> torch.Tensor:
    pad = [halo[2], halo[2], halo[1], halo[1], halo[0], halo[0]]
    if border == "edge":
        return torch.nn.functional.pad(data[None].float(), pad, mode="replicate")[0].to(data.dtype)
    if isinstance(border, int | float):
        return torch.nn.functional.pad(data, pad, mode="constant", value=float(border))
    if border == "constant":
        return torch.nn.functional.pad(data, pad, mode="constant", value=0.0)
    from voxelflow._padding import pad_tensor  # reflecting modes: through NumPy

    return pad_tensor(data, halo, halo, border)


class IntensityTransform(Transform):
    """Base of intensity transforms: each intensity image becomes a lazy image.

    Subclasses implement :meth:`transform_image` (usually with
    :func:`map_lazily`) and, for statistics of the whole volume, :meth:`prepare`.

    Example:
        >>> import torch, voxelflow as tio
        >>> subject = tio.Subject(t1=tio.ScalarImage(torch.ones(1, 2, 2, 2)),
        ...                       seg=tio.LabelMap(torch.ones(1, 2, 2, 2)))
        >>> out = tio.Gamma(log_gamma=0.5)(subject)
        >>> out.t1.is_loaded, out.seg is subject.seg
        (False, True)
    """

    lazy = True

    def output_dtype(self, image_type: str, dtype: torch.dtype) -> torch.dtype:
        return float_dtype(dtype) if image_type == INTENSITY else dtype

    def apply_transform(self, subject: Subject, params: dict[str, Any]) -> Subject:
        images = self.intensity_images(subject)
        if not images:
            return subject
        self.prepare(subject, images, params)
        return self.replace(
            subject,
            {
                name: self.transform_image(name, image, subject, params)
                for name, image in images.items()
            },
        )

    def intensity_images(self, subject: Subject) -> dict[str, Image]:
        """The intensity images to transform; a label map named in ``include`` is an error."""
        if self.include is not None:
            for name in self.include:
                image = subject.get(name)
                if isinstance(image, Image) and image.type == LABEL:
                    raise VoxelflowTypeError(
                        f"{type(self).__name__}: {describe(name, image)} is a label map, and "
                        f"{type(self).__name__} changes intensities only; remove {name!r} from "
                        "include=, or load it as a tio.ScalarImage if its values are intensities"
                    )
        return self.images_to_transform(subject, (INTENSITY,))

    def prepare(self, subject: Subject, images: dict[str, Image], params: dict[str, Any]) -> None:
        """Compute what the mapping needs from the whole volumes (statistics), before any
        image is mapped; results that the inverse needs go into ``params`` (recorded)."""

    def transform_image(
        self, name: str, image: Image, subject: Subject, params: dict[str, Any]
    ) -> Image:
        """The transformed ``image`` (the subject's ``name``), usually lazy."""
        raise NotImplementedError


class Replay(Transform):
    """``transform`` applied with fixed ``params`` (recorded ones): how inverses that
    need the drawn parameters (a bias field's seed, statistics) are built.

    Example:
        >>> import torch, voxelflow as tio
        >>> from voxelflow.transforms.intensity.base import Replay
        >>> noise = tio.Noise(std=1.0)
        >>> params = {"mean": 0.0, "std": 1.0, "seed": 3, "rician": False}
        >>> a, b = Replay(noise, params), Replay(noise, params)
        >>> torch.equal(a(torch.zeros(1, 2, 2, 2)), b(torch.zeros(1, 2, 2, 2)))
        True
    """

    def __init__(self, transform: Transform, params: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(
            include=kwargs.pop("include", transform.include),
            exclude=kwargs.pop("exclude", transform.exclude),
            **kwargs,
        )
        self.transform = transform
        self.params = dict(params)

    @property
    def lazy(self) -> bool:  # type: ignore[override]
        return self.transform.lazy

    @property
    def patchwise(self) -> bool:  # type: ignore[override]
        return self.transform.patchwise

    def make_params(self, subject: Subject, generator: torch.Generator) -> dict[str, Any]:
        return dict(self.params)

    def apply_transform(self, subject: Subject, params: dict[str, Any]) -> Subject:
        inner = copy.copy(self.transform)
        inner.include, inner.exclude = self.include, self.exclude
        return inner.apply_transform(subject, params)

    def output_dtype(self, image_type: str, dtype: torch.dtype) -> torch.dtype:
        return self.transform.output_dtype(image_type, dtype)

    def __repr__(self) -> str:
        return f"Replay({self.transform!r}, {self.params!r})"


def check_axes(owner: str, axes: int | Sequence[int]) -> tuple[int, ...]:
    """Spatial axes among 0, 1, 2, as a sorted tuple."""
    values = (axes,) if isinstance(axes, int) else tuple(axes)
    if not values or any(isinstance(a, bool) or int(a) not in (0, 1, 2) for a in values):
        from voxelflow._errors import VoxelflowValueError

        raise VoxelflowValueError(
            f"{owner}: axes must be spatial axes among 0, 1, 2 (I, J, K), got {axes!r}"
        )
    return tuple(sorted({int(a) for a in values}))
