"""``sliding_window``: run a model over a whole volume, patch by patch, in one call.

The common case of patch-based inference, in the spirit of MONAI's
``sliding_window_inference``, on :mod:`voxelflow.patches`' grid, reading and
blending. Three threads share the work so that the model never waits:

1. a **reader** cuts batches of patches straight into batch tensors (one
   allocation per batch, one backend read per patch); a volume whose region
   reads cost more than the volume (a ``.nii.gz`` stream, a whole-volume
   fallback) is decoded once, with the backend's fast path, and cut in memory;
2. the **caller's thread** moves each batch to ``device`` and runs the model
   (optionally under autocast, and on flipped copies for test-time
   augmentation);
3. an **aggregator** thread adds each output into a
   :class:`~voxelflow.PatchAggregator` while the model runs on the next batch.

Queues between them are bounded (two batches ahead), an error in any thread
stops the others and is raised in the caller's thread, and nothing runs per
voxel in Python: per batch, a handful of tensor operations.

The grid is planned by :func:`plan_grid`, which a caller (a distributed run)
can restrict to a sub-region of the output.
"""

from __future__ import annotations

import functools
import os
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from voxelflow._errors import VoxelflowRuntimeError, VoxelflowTypeError, VoxelflowValueError
from voxelflow._geometry import Triplet
from voxelflow.image import Image
from voxelflow.patches.aggregator import OverlapMode, PatchAggregator
from voxelflow.patches.base import check_patch_fits, parse_patch_size
from voxelflow.patches.grid import Padding, grid_locations, grid_padding, parse_patch_overlap
from voxelflow.patches.location import PatchLocation
from voxelflow.patches.placement import Box
from voxelflow.patches.reading import read_patch_into, reads_whole
from voxelflow.patches.slabs import Reduce
from voxelflow.subject import Subject

PREFETCH = 2  # batches read ahead of the model, and outputs waiting to be added

Model = Callable[[torch.Tensor], Any]


@dataclass(frozen=True)
class GridPlan:
    """The patches of a sliding-window pass, in grid order (``k`` slowest)."""

    spatial_shape: Triplet
    patch_size: Triplet
    patch_overlap: Triplet
    padding: Padding
    locations: tuple[PatchLocation, ...]

    def batches(self, batch_size: int) -> list[tuple[PatchLocation, ...]]:
        """The locations cut into batches, in order."""
        return [
            self.locations[start : start + batch_size]
            for start in range(0, len(self.locations), batch_size)
        ]


def plan_grid(
    spatial_shape: Sequence[int],
    patch_size: int | Sequence[int],
    patch_overlap: int | Sequence[int] = 0,
    padding_mode: str | float | None = None,
    *,
    region: Box | None = None,
    name: str = "image",
) -> GridPlan:
    """The grid of patches covering ``spatial_shape`` (or only those touching ``region``).

    Args:
        spatial_shape: ``(I, J, K)`` of the input volume.
        patch_size: an int or three ints.
        patch_overlap: an int or three ints, smaller than the patch.
        padding_mode: ``None`` (patches must fit), or how to pad the border
            (see :class:`~voxelflow.GridSampler`).
        region: three slices of the output; only the patches that contribute
            to it are kept (a shard of a distributed inference).
        name: names the input in error messages.

    Example:
        >>> from voxelflow.inference import plan_grid
        >>> plan = plan_grid((40, 40, 40), 16, 4)
        >>> len(plan.locations), plan.locations[-1].index_fin
        (27, (40, 40, 40))
        >>> half = plan_grid((40, 40, 40), 16, 4, region=(slice(0, 40), slice(0, 40), slice(0, 12)))
        >>> sorted({location.index[2] for location in half.locations})
        [0]
    """
    shape = tuple(int(n) for n in spatial_shape)
    patch = parse_patch_size(patch_size)
    overlap = parse_patch_overlap(patch_overlap, patch)
    if padding_mode is None:
        check_patch_fits(shape, patch, what=name)
        padding: Padding = ((0, 0), (0, 0), (0, 0))
    else:
        padding = grid_padding(shape, patch, overlap)
    locations = grid_locations(shape, patch, overlap, padding)
    if region is not None:
        locations = [
            location
            for location in locations
            if all(
                location.index_ini[axis] < region[axis].stop
                and location.index_fin[axis] > region[axis].start
                for axis in range(3)
            )
        ]
    return GridPlan(shape, patch, overlap, padding, tuple(locations))  # type: ignore[arg-type]


def sliding_window(
    model: Model,
    image_or_subject: Image | Subject,
    patch_size: int | Sequence[int],
    overlap: int | Sequence[int] = 0,
    mode: OverlapMode = "hann",
    batch_size: int = 4,
    device: torch.device | str | None = None,
    amp: bool = False,
    flip_tta_axes: Sequence[int | Sequence[int]] | None = None,
    reduce: Reduce | None = None,
    on_disk: str | os.PathLike[str] | None = None,
    progress: bool = True,
    *,
    padding_mode: str | float | None = None,
    image_name: str | None = None,
    output_shape: Sequence[int] | None = None,
    dtype: torch.dtype = torch.float32,
) -> Image:
    """Run ``model`` over every patch of a grid on the image and blend the outputs.

    Args:
        model: takes a ``(B, C, *patch_size)`` float32 tensor on ``device``
            and returns ``(B, C', ...)`` (or a tuple/list whose first item is).
        image_or_subject: the input :class:`~voxelflow.Image`, or a subject
            (its only intensity image, or ``image_name``).
        patch_size: an int or three ints.
        overlap: voxels shared by neighbouring patches (an int or three ints).
        mode: blending: ``"crop"``, ``"average"``, ``"hann"`` or ``"gaussian"``.
        batch_size: patches per forward pass.
        device: where the model runs (default: the model's parameters' device,
            else the CPU); outputs are blended there too, except on disk.
        amp: run the model under ``torch.autocast`` (float16 on CUDA,
            bfloat16 on the CPU).
        flip_tta_axes: test-time augmentation: for each item (a spatial axis
            ``0``-``2``, or a tuple of them) the model also runs on the batch
            flipped along those axes, the output is flipped back, and all
            passes are averaged.
        reduce: ``"argmax"`` (a label map) or ``"max"`` over channels,
            computed slab by slab as the grid passes, so the ``C``-channel
            output is never held whole (many classes in bounded memory).
        on_disk: write the output into this ``.nii.zarr`` with bounded
            memory; the result is a lazy image over it.
        progress: show a progress bar (tqdm).
        padding_mode: pad the border (``"constant"``, ``"edge"``,
            ``"reflect"``, ``"symmetric"`` or a number) so that border voxels
            get the same context as the others; the output keeps the input's
            shape.
        image_name: which image of a subject to read.
        output_shape: the output's spatial shape when the model downsamples
            by a whole factor.
        dtype: dtype of the accumulated output (``torch.float16`` halves it).

    Returns:
        A :class:`~voxelflow.ScalarImage` with the input's affine (a
        :class:`~voxelflow.LabelMap` for ``reduce="argmax"``), in memory, or
        lazily over ``on_disk``.

    Example:
        >>> import torch, voxelflow as tio
        >>> from voxelflow.inference import sliding_window
        >>> image = tio.ScalarImage(torch.rand(1, 40, 36, 30))
        >>> net = torch.nn.Conv3d(1, 3, 3, padding=1)
        >>> probabilities = sliding_window(net, image, 16, 4, "gaussian", progress=False)
        >>> probabilities.shape
        (3, 40, 36, 30)
        >>> labels = sliding_window(net, image, 16, 4, reduce="argmax", progress=False)
        >>> type(labels).__name__, labels.shape
        ('LabelMap', (1, 40, 36, 30))
    """
    image = _input_image(image_or_subject, image_name)
    name = str(image.path or "image")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise VoxelflowValueError(f"batch_size must be a positive int, got {batch_size!r}")
    plan = plan_grid(image.spatial_shape, patch_size, overlap, padding_mode, name=name)
    run_device = _device(model, device)
    passes = _tta_passes(flip_tta_axes)
    on_disk_path = None if on_disk is None else os.fspath(on_disk)
    aggregator = PatchAggregator(
        plan.spatial_shape,
        mode,
        plan.patch_overlap,
        output_shape,
        dtype=dtype,
        device="cpu" if on_disk_path is not None else run_device,
        affine=image.affine,
        on_disk=on_disk_path,
        reduce=reduce,
        grid_order=True,
    )
    batches = plan.batches(batch_size)
    source = _Source(image, padding_mode)
    autocast: Any = nullcontext()
    if amp:
        kind = run_device.type
        autocast = torch.autocast(kind, dtype=torch.float16 if kind == "cuda" else torch.bfloat16)
    from tqdm import tqdm

    bar = tqdm(total=len(plan.locations), desc="sliding window", unit="patch", disable=not progress)
    pipeline = _Pipeline(source, batches, aggregator)
    try:
        with pipeline, torch.inference_mode():
            for inputs, locations in pipeline.batches():
                inputs = inputs.to(run_device, non_blocking=True)
                with autocast:
                    outputs = _forward(model, inputs, passes, name)
                pipeline.aggregate(outputs, locations)
                bar.update(len(locations))
        aggregator.finish()
        return aggregator.get_image()
    except BaseException:
        aggregator.abort()
        raise
    finally:
        bar.close()


# ---------------------------------------------------------------------- pieces
def _input_image(source: Image | Subject, image_name: str | None) -> Image:
    if isinstance(source, Image):
        return source
    if not isinstance(source, Subject):
        raise VoxelflowTypeError(
            f"sliding_window: pass an Image or a Subject, got {type(source).__name__}"
        )
    if image_name is not None:
        image = source[image_name]
        if not isinstance(image, Image):
            raise VoxelflowTypeError(f"sliding_window: entry {image_name!r} is not an image")
        return image
    intensity = source.get_images(intensity_only=True) or source.get_images(intensity_only=False)
    if len(intensity) != 1:
        names = ", ".join(source.images) or "none"
        raise VoxelflowValueError(
            f"sliding_window: the subject has several images ({names}); pass image_name="
        )
    return intensity[0]


def _device(model: Model, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    parameters = getattr(model, "parameters", None)
    if callable(parameters):
        for parameter in parameters():
            return torch.device(parameter.device)
    return torch.device("cpu")


def _tta_passes(axes: Sequence[int | Sequence[int]] | None) -> list[tuple[int, ...]]:
    """The flips of each pass, as tensor dimensions of a ``(B, C, I, J, K)`` batch."""
    passes: list[tuple[int, ...]] = [()]
    for item in axes or ():
        group = (item,) if isinstance(item, int) else tuple(item)
        if not group or any(isinstance(a, bool) or a not in (0, 1, 2) for a in group):
            raise VoxelflowValueError(
                f"flip_tta_axes: each item is a spatial axis 0, 1 or 2, or a tuple of them; "
                f"got {item!r}"
            )
        passes.append(tuple(sorted({a + 2 for a in group})))
    return passes


def _forward(model: Model, inputs: torch.Tensor, passes: list[tuple[int, ...]], name: str) -> Any:
    total: Any = None
    for dims in passes:
        batch = inputs.flip(dims) if dims else inputs
        try:
            outputs = model(batch)
        except Exception as error:
            raise VoxelflowRuntimeError(
                f"{name}: the model failed on a batch of shape {tuple(batch.shape)}: "
                f"{str(error).splitlines()[0] if str(error) else type(error).__name__}"
            ) from error
        outputs = _first(outputs)
        if dims:
            outputs = _map(outputs, functools.partial(torch.flip, dims=dims))
        total = outputs if total is None else _map2(total, outputs)
    if len(passes) > 1:
        total = _map(total, lambda tensor: tensor / len(passes))
    return total


def _first(outputs: Any) -> Any:
    if isinstance(outputs, tuple | list):
        return outputs[0]
    return outputs


def _map(outputs: Any, function: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(outputs, Mapping):
        return {key: function(value) for key, value in outputs.items()}
    return function(outputs)


def _map2(a: Any, b: Any) -> Any:
    if isinstance(a, Mapping):
        return {key: a[key].float() + b[key].float() for key in a}
    return a.float() + b.float()


class _Source:
    """Cuts patches of one image into batch tensors (decoding it once when that is cheaper)."""

    def __init__(self, image: Image, padding_mode: str | float | None) -> None:
        self.image = image
        self.padding_mode = padding_mode
        self.channels = image.num_channels
        self._whole: Image | None = None

    def prepare(self) -> None:
        """Decode a stream once (in the reader thread), through the backend's fast path."""
        if reads_whole(self.image):
            whole = self.image.new_like(self.image.dataobj.read(None))
            self._whole = whole

    def read_batch(self, locations: Sequence[PatchLocation]) -> torch.Tensor:
        size = locations[0].size
        batch = torch.empty((len(locations), self.channels, *size), dtype=torch.float32)
        image = self._whole if self._whole is not None else self.image
        for n, location in enumerate(locations):
            read_patch_into(image, location, batch[n], self.padding_mode)
        return batch


_DONE = object()


class _Pipeline:
    """Reader and aggregator threads around the caller's model loop.

    Both queues are bounded and every wait is a plain blocking ``get``/``put``:
    the reader always ends its queue with ``_DONE`` (after its error, if any),
    the aggregator consumes until ``_DONE`` (discarding after an error), and
    the caller drains the reader's queue when it stops early, so no thread is
    left blocked.
    """

    def __init__(
        self, source: _Source, batches: list[tuple[PatchLocation, ...]], aggregator: PatchAggregator
    ) -> None:
        self.source = source
        self.plan = batches
        self.aggregator = aggregator
        self._inputs: queue.Queue[Any] = queue.Queue(PREFETCH)
        self._outputs: queue.Queue[Any] = queue.Queue(PREFETCH)
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._reader = threading.Thread(target=self._read, name="voxelflow-read", daemon=True)
        self._adder = threading.Thread(target=self._add, name="voxelflow-add", daemon=True)

    def __enter__(self) -> _Pipeline:
        self._reader.start()
        self._adder.start()
        return self

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        self._stop.set()
        self._outputs.put(_DONE)
        while self._reader.is_alive():  # unblock a reader waiting for room
            try:
                self._inputs.get(timeout=1.0)
            except queue.Empty:
                continue
        self._reader.join()
        self._adder.join()
        if error is None:
            self._raise()

    # ---------------------------------------------------------------- threads
    def _read(self) -> None:
        try:
            self.source.prepare()
            for locations in self.plan:
                if self._stop.is_set():
                    break
                self._inputs.put((self.source.read_batch(locations), locations))
        except BaseException as error:
            self._errors.append(error)
        finally:
            self._inputs.put(_DONE)

    def _add(self) -> None:
        while True:
            item = self._outputs.get()
            if item is _DONE:
                return
            if self._errors:
                continue  # keep consuming, so the caller never blocks on a full queue
            outputs, locations = item
            try:
                with torch.inference_mode():
                    self.aggregator.add_batch(outputs, list(locations))
            except BaseException as error:
                self._errors.append(error)

    def _raise(self) -> None:
        if self._errors:
            raise self._errors[0]

    # ---------------------------------------------------------------- caller
    def batches(self) -> Iterator[tuple[torch.Tensor, tuple[PatchLocation, ...]]]:
        while True:
            item = self._inputs.get()
            self._raise()
            if item is _DONE:
                return
            yield item

    def aggregate(self, outputs: Any, locations: tuple[PatchLocation, ...]) -> None:
        self._raise()
        self._outputs.put((outputs, locations))


__all__ = ["GridPlan", "plan_grid", "sliding_window"]
