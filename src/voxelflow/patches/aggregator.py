"""``PatchAggregator``: blend a model's patch outputs back into whole volumes.

The aggregator owns the options and the routing: it validates a batch, asks
:mod:`voxelflow.patches.placement` where each patch goes, picks the blend
window (:mod:`voxelflow.patches.blending`), and hands the batch to one
accumulator per named output (:mod:`voxelflow.patches.accumulators`: the whole
output in memory; :mod:`voxelflow.patches.slabs`: slabs on their way to a
``.nii.zarr``). The result is the weighted sum divided by the summed weights,
so any positive window blends a constant volume into the same constant
(TorchIO 2.0's Hann mode divides by a clamped window sum instead and does not).

Modes:

* ``"crop"``: each patch contributes its centre only: ``overlap // 2`` voxels
  are trimmed on each side that faces another patch (the rest of the overlap
  after), none on a side at the border of the (padded) grid. When the trimmed
  margin covers a fully convolutional network's receptive field the result
  equals a whole-volume forward pass. Where the last, flush patch makes
  centres overlap, they are averaged.
* ``"average"``: every patch with weight 1.
* ``"hann"`` and ``"gaussian"``: separable windows, built once per patch size;
  or a user's own ``window=``.

Outputs smaller than the input (``output_shape``, an integer factor per axis),
several named outputs, and accumulation on disk into a ``.nii.zarr`` are
supported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch

from voxelflow._errors import (
    VoxelflowKeyError,
    VoxelflowRuntimeError,
    VoxelflowTypeError,
    VoxelflowValueError,
    check_choice,
    did_you_mean,
)
from voxelflow._geometry import Triplet, to_triplet
from voxelflow.batch import SubjectsBatch
from voxelflow.image import Image, LabelMap, ScalarImage
from voxelflow.patches.accumulators import VECTORISED_MAX_VOXELS, Accumulator, MemoryAccumulator
from voxelflow.patches.blending import UserWindow, user_window, window_3d
from voxelflow.patches.grid import Padding, grid_padding
from voxelflow.patches.location import PatchLocation
from voxelflow.patches.placement import (
    Placement,
    output_factor,
    parse_output_shapes,
    place,
)
from voxelflow.patches.slabs import (
    MemorySink,
    Reduce,
    SlabAccumulator,
    ZarrSink,
    label_dtype,
    memory_slab_accumulator,
    parse_reduce,
    zarr_slab_accumulator,
)

OverlapMode = Literal["crop", "average", "hann", "gaussian"]
OVERLAP_MODES: tuple[str, ...] = ("crop", "average", "hann", "gaussian")
ACCUMULATOR_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
DEFAULT_KEY = "output"
DEFAULT_CHUNK = 64

Locations = Sequence[PatchLocation] | SubjectsBatch | torch.Tensor | np.ndarray


class _Output:
    """One named output: its geometry and its accumulator."""

    def __init__(
        self, name: str, shape: Triplet, factor: Triplet, accumulator: Accumulator
    ) -> None:
        self.name = name
        self.shape = shape
        self.factor = factor
        self.accumulator = accumulator

    @property
    def channels(self) -> int:
        return self.accumulator.channels

    @property
    def patches(self) -> int:
        return self.accumulator.patches

    @property
    def streamed(self) -> SlabAccumulator | None:
        """The slab accumulator of a streamed (on-disk or reduced) output."""
        accumulator = self.accumulator
        return accumulator if isinstance(accumulator, SlabAccumulator) else None

    @property
    def on_disk(self) -> SlabAccumulator | None:
        streamed = self.streamed
        return streamed if streamed is not None and isinstance(streamed.sink, ZarrSink) else None


class PatchAggregator:
    """Blend patch outputs into volumes: ``add_batch`` for every batch, then ``get_output``.

    Args:
        spatial_shape: ``(I, J, K)`` of the volume the patches come from.
        overlap_mode: ``"crop"`` (default), ``"average"``, ``"hann"`` or
            ``"gaussian"``; see the module's documentation. Ignored when
            ``window`` is given.
        patch_overlap: the sampler's overlap (an int or three ints). ``"crop"``
            trims by it; locations of a padded
            :class:`~voxelflow.GridSampler` may stick out of the volume by the
            padding it implies, and are cropped to the volume.
        output_shape: the spatial shape of the output when the model's output is
            smaller than its input, e.g. ``(128, 128, 88)`` for a stride-2
            encoder on ``(256, 256, 176)``; a mapping gives one per named
            output. Each axis must shrink by an integer factor.
        window: your own blending window: a tensor of the output patch's
            spatial shape, or ``window(size) -> tensor``; strictly positive.
        dtype: dtype of the sums (``torch.float32``; ``torch.float16`` halves
            the memory). Weights are float32 (float64 with float64 sums).
        device: where to accumulate; ``None`` means the device of the first
            batch (the model's). ``"cpu"`` keeps a GPU free for the model.
        affine: 4×4 affine of the input volume, for :meth:`get_image` and
            :meth:`save` (the input image's, via :meth:`from_sampler`).
        on_disk: accumulate into this ``.nii.zarr`` instead of memory (a
            mapping gives one path per named output). Memory stays at a few
            slabs of chunks (see :attr:`memory_bound`); patches must come in
            grid order.
        chunks: chunk size (an int or three ints) of the on-disk output.
        reduce: ``"argmax"`` (a label map of the most likely channel) or
            ``"max"`` (the largest channel value), computed while the grid
            passes: slabs of the output are blended and reduced as soon as no
            later patch can touch them, so only the slabs in flight hold every
            channel (about one patch deep across the ``I × J`` plane), in
            memory or on disk. Patches must come in grid order. The way to
            segment with many classes: the full ``C``-channel output is never
            held.
        argmax: on disk only, the same as ``reduce="argmax"``.
        grid_order: the patches come in grid order (a
            :class:`~voxelflow.GridSampler` iterated in order): each slab of
            the output is blended as soon as the grid has passed it, while
            later patches are still being computed, and only the weights of
            the slabs in flight are kept beside the output.

    Example:
        >>> import torch, voxelflow as tio
        >>> from voxelflow.loader import SubjectsLoader
        >>> subject = tio.Subject(t1=tio.ScalarImage(torch.rand(1, 24, 24, 16)))
        >>> sampler = tio.GridSampler(subject, patch_size=(12, 12, 16), patch_overlap=(4, 4, 0))
        >>> aggregator = tio.PatchAggregator(subject.spatial_shape, "hann", patch_overlap=(4, 4, 0))
        >>> for batch in SubjectsLoader(sampler, batch_size=4):
        ...     aggregator.add_batch(batch.t1.data * 2, batch.metadata["patch_location"])
        >>> torch.allclose(aggregator.get_output(), subject.t1.data * 2)
        True
    """

    def __init__(
        self,
        spatial_shape: Sequence[int],
        overlap_mode: OverlapMode | None = None,
        patch_overlap: int | Sequence[int] = 0,
        output_shape: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
        *,
        window: UserWindow | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        affine: np.ndarray | None = None,
        on_disk: str | os.PathLike[str] | Mapping[str, str | os.PathLike[str]] | None = None,
        chunks: int | Sequence[int] = DEFAULT_CHUNK,
        argmax: bool = False,
        reduce: Reduce | None = None,
        grid_order: bool = False,
    ) -> None:
        self.spatial_shape = to_triplet(spatial_shape, "spatial_shape")
        if any(n <= 0 for n in self.spatial_shape):
            raise VoxelflowValueError(f"spatial_shape must be positive, got {self.spatial_shape}")
        if window is not None and overlap_mode not in (None, "average", "hann", "gaussian"):
            raise VoxelflowValueError(
                f"window= replaces the blending window and cannot be combined with "
                f"overlap_mode={overlap_mode!r}; leave overlap_mode out"
            )
        if window is None:
            self.overlap_mode = check_choice("overlap_mode", overlap_mode or "crop", OVERLAP_MODES)
        else:
            self.overlap_mode = "window"
        self.window = window
        self.patch_overlap = to_triplet(patch_overlap, "patch_overlap")
        if any(o < 0 for o in self.patch_overlap):
            raise VoxelflowValueError(
                f"patch_overlap must be non-negative, got {self.patch_overlap}"
            )
        self._output_shapes = parse_output_shapes(self.spatial_shape, output_shape)
        if dtype not in ACCUMULATOR_DTYPES:
            raise VoxelflowValueError(
                f"dtype={dtype} cannot accumulate; use one of "
                f"{', '.join(str(d) for d in ACCUMULATOR_DTYPES)}"
            )
        self.dtype = dtype
        self.device = None if device is None else torch.device(device)
        self.affine = None if affine is None else np.asarray(affine, dtype=np.float64)
        if on_disk is not None and self.device is not None and self.device.type != "cpu":
            raise VoxelflowValueError(
                "on_disk= accumulates on the CPU; leave device= out or pass device='cpu'"
            )
        if on_disk is not None and dtype not in (torch.float32, torch.float16):
            raise VoxelflowValueError(f"on_disk= stores float32 or float16, got dtype={dtype}")
        self.on_disk = on_disk
        if on_disk is not None:
            for path in on_disk.values() if isinstance(on_disk, Mapping) else (on_disk,):
                if not os.fspath(path).endswith(".nii.zarr"):
                    raise VoxelflowValueError(
                        f"{os.fspath(path)}: on-disk aggregation writes NIfTI-Zarr; name the "
                        "output *.nii.zarr"
                    )
        if argmax and on_disk is None:
            raise VoxelflowValueError(
                "argmax= applies to on-disk outputs; in memory use reduce='argmax' (streamed, "
                "in bounded memory) or get_image(key, argmax=True)"
            )
        self.reduce = parse_reduce(reduce)
        if argmax:
            if self.reduce not in (None, "argmax"):
                raise VoxelflowValueError(
                    f"argmax=True and reduce={reduce!r} disagree; pass one of them"
                )
            self.reduce = "argmax"
        self.argmax = self.reduce == "argmax"
        self.grid_order = bool(grid_order)
        self.chunks = to_triplet(chunks, "chunks")
        self._outputs: dict[str, _Output] = {}
        self._windows: dict[tuple[int, int, int], torch.Tensor] = {}
        self._vectorised_max_voxels = VECTORISED_MAX_VOXELS

    @classmethod
    def from_sampler(cls, sampler: Any, **kwargs: Any) -> PatchAggregator:
        """An aggregator for a :class:`~voxelflow.GridSampler`: its spatial shape, overlap,
        and the affine of its subject's first image.

        Example:
            >>> import torch, voxelflow as tio
            >>> subject = tio.Subject(t1=tio.ScalarImage(torch.rand(1, 16, 16, 16)))
            >>> sampler = tio.GridSampler(subject, 8, 2, padding_mode="edge")
            >>> tio.PatchAggregator.from_sampler(sampler, overlap_mode="average").spatial_shape
            (16, 16, 16)
        """
        if sampler.subject is None:
            raise VoxelflowValueError("from_sampler needs a GridSampler built with a subject")
        kwargs.setdefault("patch_overlap", sampler.patch_overlap)
        if "affine" not in kwargs:
            images = list(sampler.subject.images.values())
            kwargs["affine"] = images[0].affine if images else None
        return cls(sampler.spatial_shape, **kwargs)

    # ------------------------------------------------------------------ options
    def _factor(self, name: str) -> Triplet:
        shape = self._output_shapes.get(name, self._output_shapes.get(None, self.spatial_shape))
        return output_factor(self.spatial_shape, shape)

    # ------------------------------------------------------------------ adding
    def add_batch(
        self,
        outputs: torch.Tensor | Mapping[str, torch.Tensor],
        locations: Locations,
    ) -> None:
        """Add the model's outputs for one batch of patches.

        Args:
            outputs: a ``(B, C, I, J, K)`` tensor, or named tensors (one per output).
            locations: the batch's :class:`~voxelflow.PatchLocation` list, the
                :class:`~voxelflow.SubjectsBatch` itself, or a ``(B, 6)`` array of
                ``(i0, j0, k0, i1, j1, k1)`` (TorchIO's form).
        """
        named = self._as_named(outputs)
        places = self._as_locations(locations)
        plans = {}
        for name, tensor in named.items():  # validate everything before adding anything
            if tensor.shape[0] != len(places):
                raise VoxelflowValueError(
                    f"PatchAggregator: output {name!r} has {tensor.shape[0]} patches but "
                    f"{len(places)} locations were given; pass the locations of this batch"
                )
            existing = self._outputs.get(name)
            if existing is not None and existing.channels != tensor.shape[1]:
                raise VoxelflowValueError(
                    f"PatchAggregator: output {name!r} had {existing.channels} channels, this "
                    f"batch has {tensor.shape[1]}; a model must return the same channels for "
                    "every patch"
                )
            plans[name] = self._plan(name, tensor, places)
        if self.on_disk is not None and not isinstance(self.on_disk, Mapping):
            if len({*self._outputs, *named}) > 1:
                raise VoxelflowValueError(
                    f"on_disk={os.fspath(self.on_disk)!r} names one file but the model has "
                    f"several outputs ({', '.join(named)}); pass a mapping {{name: path.nii.zarr}}"
                )
        elif self.on_disk is not None:
            for name in named:
                self._disk_path(name)
        for name, tensor in named.items():
            self._add(self._get_or_create(name, tensor), tensor, plans[name])

    def _as_named(self, outputs: Any) -> dict[str, torch.Tensor]:
        if isinstance(outputs, torch.Tensor):
            named = {DEFAULT_KEY: outputs}
        elif isinstance(outputs, Mapping):
            named = dict(outputs)
        else:
            raise VoxelflowTypeError(
                "add_batch: outputs must be a (B, C, I, J, K) tensor or a dict of them, got "
                f"{type(outputs).__name__}"
            )
        if not named:
            raise VoxelflowValueError("add_batch: the dict of outputs is empty")
        for name, tensor in named.items():
            if not isinstance(name, str):
                raise VoxelflowTypeError(f"add_batch: output names must be strings, got {name!r}")
            if not isinstance(tensor, torch.Tensor) or tensor.ndim != 5:
                shape = (
                    tuple(tensor.shape)
                    if isinstance(tensor, torch.Tensor)
                    else type(tensor).__name__
                )
                raise VoxelflowValueError(
                    f"add_batch: output {name!r} must be a (B, C, I, J, K) tensor, got {shape}"
                )
            if not (tensor.is_floating_point() or tensor.is_complex()):
                named[name] = tensor.float()
        return named

    @staticmethod
    def _as_locations(locations: Any) -> list[PatchLocation]:
        if isinstance(locations, SubjectsBatch):
            if "patch_location" not in locations.metadata:
                raise VoxelflowValueError(
                    "add_batch: this batch has no 'patch_location'; batch patches from a sampler"
                )
            locations = locations.metadata["patch_location"]
        if isinstance(locations, torch.Tensor | np.ndarray):
            array = np.asarray(
                locations.cpu() if isinstance(locations, torch.Tensor) else locations
            )
            if array.ndim != 2 or array.shape[1] != 6:
                raise VoxelflowValueError(
                    f"add_batch: a locations array must be (B, 6) (i0, j0, k0, i1, j1, k1), got {array.shape}"
                )
            return [
                PatchLocation(tuple(row[:3]), tuple(row[3:] - row[:3])) for row in array.astype(int)
            ]
        if isinstance(locations, PatchLocation):
            locations = [locations]
        result = list(locations)
        for location in result:
            if not isinstance(location, PatchLocation):
                raise VoxelflowTypeError(
                    f"add_batch: locations must be PatchLocation objects, got {type(location).__name__}; "
                    "pass batch.metadata['patch_location'] or the batch itself"
                )
        return result

    def _get_or_create(self, name: str, tensor: torch.Tensor) -> _Output:
        if name in self._outputs:
            return self._outputs[name]
        channels = int(tensor.shape[1])
        factor = self._factor(name)
        shape: Triplet = tuple(s // f for s, f in zip(self.spatial_shape, factor, strict=True))  # type: ignore[assignment]
        accumulator: Accumulator
        if self.on_disk is not None:
            accumulator = zarr_slab_accumulator(
                self._disk_path(name),
                shape,
                channels,
                self.dtype,
                self.output_affine(factor),
                max_patch_k=int(tensor.shape[-1]),
                chunks=self.chunks,
                reduce=self.reduce,
            )
        elif self.reduce is not None or self.grid_order:
            accumulator = memory_slab_accumulator(
                shape,
                channels,
                self.dtype,
                max_patch_k=int(tensor.shape[-1]),
                reduce=self.reduce,
                name=name,
                device=self.device or tensor.device,
            )
        else:
            device = self.device or tensor.device
            accumulator = MemoryAccumulator(
                shape,
                channels,
                self.dtype,
                device,
                name=name,
                vectorised_max_voxels=self._vectorised_max_voxels,
            )
        output = _Output(name, shape, factor, accumulator)
        self._outputs[name] = output
        return output

    def _disk_path(self, name: str) -> str:
        assert self.on_disk is not None
        if isinstance(self.on_disk, Mapping):
            if name not in self.on_disk:
                raise VoxelflowKeyError(
                    f"on_disk has no path for output {name!r}; paths given for: "
                    f"{', '.join(self.on_disk)}." + did_you_mean(name, tuple(self.on_disk))
                )
            return os.fspath(self.on_disk[name])
        return os.fspath(self.on_disk)

    def _plan(
        self, name: str, tensor: torch.Tensor, locations: list[PatchLocation]
    ) -> list[Placement]:
        """Where each patch goes: destination box in the output, source box in the patch."""
        patch_out = tuple(int(n) for n in tensor.shape[2:])
        factor = self._factor(name)
        paddings: dict[Triplet, Padding] = {}
        plan = []
        for location in locations:
            size = location.size
            if size not in paddings:
                paddings[size] = grid_padding(self.spatial_shape, size, self.patch_overlap)
            placement = place(
                name=name,
                spatial_shape=self.spatial_shape,
                patch_overlap=self.patch_overlap,
                factor=factor,
                crop=self.overlap_mode == "crop",
                location=location,
                patch_out=patch_out,
                padding=paddings[size],
            )
            assert placement is not None  # the whole output: every patch lands somewhere
            plan.append(placement)
        return plan

    def _window(self, size: tuple[int, int, int], device: torch.device) -> torch.Tensor | None:
        if self.overlap_mode in ("crop", "average"):
            return None
        key = size
        window = self._windows.get(key)
        if window is None or window.device != device:
            dtype = torch.float64 if self.dtype == torch.float64 else torch.float32
            if self.window is not None:
                window = user_window(self.window, size, dtype=dtype, device=device)
            else:
                window = window_3d(self.overlap_mode, size, dtype=dtype, device=device)
            self._windows[key] = window
        return window

    def _add(self, output: _Output, tensor: torch.Tensor, plan: list[Placement]) -> None:
        accumulator = output.accumulator
        if isinstance(accumulator, MemoryAccumulator):
            device = accumulator.device
            # "crop" trims nearly every patch, so its batches keep the per-patch path
            crop = self.overlap_mode == "crop"
            accumulator.vectorised_max_voxels = 0 if crop else self._vectorised_max_voxels
        else:
            device = accumulator.device
        data = tensor.detach().to(device=device, dtype=self.dtype, non_blocking=True)
        window = self._window(tuple(int(n) for n in tensor.shape[2:]), device)  # type: ignore[arg-type]
        accumulator.add(data, window, plan)

    # ------------------------------------------------------------------ results
    @property
    def keys(self) -> list[str]:
        """Names of the outputs added so far (``"output"`` for a plain tensor)."""
        return list(self._outputs)

    def _resolve(self, key: str | None) -> _Output:
        if not self._outputs:
            raise VoxelflowRuntimeError(
                "PatchAggregator: nothing was added yet; call add_batch(outputs, locations) "
                "for every batch of the grid before get_output"
            )
        if key is None:
            if len(self._outputs) > 1:
                raise VoxelflowKeyError(
                    f"PatchAggregator holds several outputs ({', '.join(self._outputs)}); "
                    "pass get_output(key)"
                )
            return next(iter(self._outputs.values()))
        if key not in self._outputs:
            raise VoxelflowKeyError(
                f"PatchAggregator has no output {key!r}; outputs: {', '.join(self._outputs)}."
                + did_you_mean(key, tuple(self._outputs))
            )
        return self._outputs[key]

    def get_output(
        self, key: str | None = None, *, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """The blended ``(C, I, J, K)`` output (on ``device``, default where it accumulated);
        with ``reduce``, the ``(1, I, J, K)`` reduction.

        Raises if a voxel was covered by no patch (a batch was not added). The
        output is blended once: later calls return the same tensor, and
        :meth:`add_batch` refuses more patches until :meth:`reset`.
        """
        output = self._resolve(key)
        accumulator = output.accumulator
        if isinstance(accumulator, MemoryAccumulator):
            result = accumulator.finalize()
        elif isinstance(accumulator, SlabAccumulator) and isinstance(accumulator.sink, MemorySink):
            accumulator.finalize()
            result = accumulator.sink.result
        else:
            raise VoxelflowValueError(
                f"output {output.name!r} is accumulated on disk ({accumulator.name}); call "
                " finish() and get_image(), which reads it lazily"
            )
        return result if device is None else result.to(device)

    def reset(self) -> None:
        """Forget every output (dropping partial on-disk ones) to aggregate a new volume."""
        self.abort()
        self._outputs.clear()

    def output_affine(
        self, factor: Sequence[int] = (1, 1, 1), affine: np.ndarray | None = None
    ) -> np.ndarray:
        """The input's affine (or ``affine``) for an output downsampled by ``factor`` (each
        output voxel at the centre of the block of input voxels it summarises)."""
        if affine is None:
            affine = np.eye(4) if self.affine is None else self.affine
        affine = np.asarray(affine, dtype=np.float64)
        scale = np.eye(4)
        scale[:3, :3] = np.diag(np.asarray(factor, dtype=np.float64))
        scale[:3, 3] = (np.asarray(factor, dtype=np.float64) - 1) / 2
        return affine @ scale

    def get_image(
        self,
        key: str | None = None,
        *,
        argmax: bool = False,
        affine: np.ndarray | None = None,
    ) -> Image:
        """The output as an :class:`~voxelflow.Image` with the input's affine (scaled for a
        downsampled output): a :class:`~voxelflow.ScalarImage`, or with ``argmax`` the
        :class:`~voxelflow.LabelMap` of the most likely channel. An on-disk output is
        finished and read lazily."""
        output = self._resolve(key)
        image_affine = self.output_affine(output.factor, affine)
        if argmax and self.reduce is not None and not self.argmax:
            raise VoxelflowValueError(
                f"this output holds the {self.reduce!r} reduction, not channels; pass "
                "reduce='argmax' to the aggregator for labels"
            )
        if output.on_disk is not None:
            if argmax and not self.argmax:
                raise VoxelflowValueError(
                    "this on-disk output holds channels; pass argmax=True to the aggregator "
                    "to write labels"
                )
            self.finish(output.name)
            image_class = LabelMap if self.argmax else ScalarImage
            return image_class(output.on_disk.name)
        data = self.get_output(output.name)
        if self.argmax:
            return LabelMap(data.cpu(), affine=image_affine)
        if argmax:
            labels = data.argmax(0, keepdim=True).to(label_dtype(output.channels))
            return LabelMap(labels.cpu(), affine=image_affine)
        return ScalarImage(data.cpu(), affine=image_affine)

    def save(
        self,
        path: str | os.PathLike[str],
        key: str | None = None,
        *,
        argmax: bool = False,
        **options: Any,
    ) -> None:
        """Write the output to ``path`` (any format :meth:`Image.save` writes)."""
        self.get_image(key, argmax=argmax).save(path, **options)

    # ------------------------------------------------------------------ on disk
    def finish(self, key: str | None = None) -> None:
        """Write what remains of on-disk outputs (all, or ``key``) and move them into place."""
        names = list(self._outputs) if key is None else [self._resolve(key).name]
        for name in names:
            streamed = self._outputs[name].streamed
            if streamed is not None:
                streamed.finalize()

    def abort(self) -> None:
        """Drop partial on-disk outputs (nothing is left at their paths)."""
        for output in self._outputs.values():
            output.accumulator.abort()

    def __enter__(self) -> PatchAggregator:
        return self

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        if error is None:
            self.finish()
        else:
            self.abort()

    @property
    def memory_bound(self) -> int:
        """Bytes held by the accumulators: sums and weights in memory, or the open slabs on disk."""
        return sum(output.accumulator.memory_bound for output in self._outputs.values())

    def __repr__(self) -> str:
        return (
            f"PatchAggregator(spatial_shape={self.spatial_shape}, overlap_mode={self.overlap_mode!r}, "
            f"patch_overlap={self.patch_overlap}, outputs={self.keys})"
        )


__all__ = ["OVERLAP_MODES", "VECTORISED_MAX_VOXELS", "OverlapMode", "PatchAggregator"]
