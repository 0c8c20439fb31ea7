"""``Queue``: a bounded, reproducible stream of patches from many subjects.

How an epoch runs:

1. **Plan.** The subjects of the epoch are listed (all of them, or the rank's
   share from ``subject_sampler``), shuffled with the epoch's generator, and
   split between DataLoader worker processes when there are any. Each subject
   gets its own seed, derived from the queue's seed, the epoch and the
   subject's place in the plan, so the results do not depend on which thread
   runs first.
2. **Produce** (in ``num_workers`` background threads, or inline). For a
   subject: make private copies of its images (the caller's objects are never
   loaded or modified), apply the part of the transform that needs the whole
   volume (if any), ask the sampler for ``patches_per_volume`` locations (from
   headers and sampling tables), and read just those regions (copies), each
   with the seed of its patchwise transform. Without a whole-volume transform
   a ``.nii`` subject is never read whole; sources without cheap region reads
   (``.nii.gz``) are read once, whole, by the worker and dropped when its
   patches are cut.
3. **Consume.** Results are taken in plan order into a buffer; with
   ``shuffle_patches`` the buffer is filled as far as ``max_length`` allows and
   a random patch is handed out each time (a shuffle buffer); otherwise
   patches come first in, first out. The patchwise part of the transform
   (flips, noise: usually integers becoming floats) is applied as a patch
   leaves the buffer, by the same number of background threads a few patches
   ahead of the training loop, so the buffer holds patches in their stored
   dtype (an int16 volume's patches take half the memory of their float32
   results). Patches whose ``data`` dtype is wider than the stored one (the
   dtype policy: an int16 ``ScalarImage`` gives float32) wait as stored and
   are converted as they leave, with the transform.

Bounds: patches in the buffer (and being transformed) plus patches of
subjects submitted to the workers never exceed ``max_length`` (a subject is submitted only when its
``patches_per_volume`` fit), at most ``2 * num_workers`` subjects are
submitted and not yet consumed, and at most ``num_workers`` are being worked
on (each holding one volume at most). The consumer blocks on the oldest
result (no polling); a worker's exception is raised in the training loop;
closing the iterator (``break``, ``del``) stops the workers and joins them.
"""

from __future__ import annotations

import copy
import math
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence, Sized
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from voxelflow import _dtype
from voxelflow._errors import VoxelflowRuntimeError, VoxelflowTypeError, VoxelflowValueError
from voxelflow._format import pretty_bytes
from voxelflow._random import derive_seed, fresh_seed, make_generator, seed_from
from voxelflow.image import Image
from voxelflow.patches.base import PatchSampler
from voxelflow.patches.location import PatchLocation
from voxelflow.patches.reading import private_copy, reads_whole, subject_name
from voxelflow.subject import Subject
from voxelflow.transforms.transform import Transform

TransformLike = Callable[..., Any]
LOOKAHEAD = 4  # patches taken out of the buffer ahead of the loop (transformed by the threads)


def split_transform(
    transform: TransformLike | None,
) -> tuple[TransformLike | None, TransformLike | None]:
    """``(whole, per_patch)`` parts of a transform (see ``Compose.split``).

    A callable that is not a voxelflow transform counts as needing the whole
    subject unless it has ``patchwise = True``.
    """
    if transform is None:
        return None, None
    split = getattr(transform, "split", None)
    if split is not None:
        return split()  # type: ignore[no-any-return]
    return (None, transform) if getattr(transform, "patchwise", False) else (transform, None)


def _output_dtype(transform: TransformLike, image_type: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype ``transform`` gives an image (unchanged for a callable that does not say)."""
    if isinstance(transform, Transform):
        return transform.output_dtype(image_type, dtype)
    return dtype


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _buffer_dtype(image: Image) -> torch.dtype:
    """The dtype ``image``'s patches wait in: the stored one when it is narrower than
    ``data``'s (they are converted as they leave the buffer), else ``data``'s."""
    if image.is_loaded:
        return image.dtype
    stored = image.stored_dtype
    return stored if _itemsize(stored) < _itemsize(image.dtype) else image.dtype


Produced = tuple[Subject, int, dict[str, torch.dtype]]  # patch, seed, dtypes to convert to


def _apply(transform: TransformLike, subject: Subject, generator: torch.Generator) -> Subject:
    """Call a voxelflow transform with the subject's generator; any other callable plainly."""
    if isinstance(transform, Transform):
        return transform(subject, generator)
    result = transform(subject)
    if not isinstance(result, Subject):
        raise VoxelflowTypeError(
            f"Queue: the transform {transform!r} returned a {type(result).__name__}, not a Subject"
        )
    return result


class Queue(IterableDataset):  # type: ignore[type-arg]
    """Patches from many subjects, prepared in the background, in bounded memory.

    Args:
        subjects: a sequence (or map-style dataset) of :class:`~voxelflow.Subject`.
        patch_sampler: any :class:`~voxelflow.patches.base.PatchSampler`
            (``UniformSampler``, ``WeightedSampler``, ``LabelSampler``,
            ``GridSampler``...).
        max_length: most patches held at once (buffer plus work in progress).
        patches_per_volume: patches cut from each subject in an epoch (exactly).
        num_workers: background threads preparing subjects (0: inline).
        shuffle_subjects: shuffle the subjects each epoch.
        shuffle_patches: hand out patches in random order from the buffer.
        transform: applied to each subject; its patchwise part (flips, noise,
            intensity maps with fixed parameters) is applied to each patch
            instead, so only patches are read.
        subject_sampler: e.g. ``DistributedSampler(subjects)``: the epoch covers
            the subjects it lists (call its ``set_epoch`` as usual).
        seed: seeds everything random in the queue; the same seed gives the
            same stream of patches (epoch after epoch). With DataLoader worker
            processes, call :meth:`set_epoch` each epoch (or seed the
            DataLoader's ``generator``) for the same guarantee.

    Example:
        >>> import torch, voxelflow as tio
        >>> from voxelflow.loader import SubjectsLoader
        >>> subjects = [tio.Subject(t1=tio.ScalarImage(torch.rand(1, 16, 16, 16))) for _ in range(4)]
        >>> queue = tio.Queue(
        ...     subjects, tio.UniformSampler(patch_size=8), max_length=8, patches_per_volume=3,
        ...     num_workers=2, seed=0,
        ... )
        >>> len(queue), queue.max_memory_pretty
        (12, '24.0 KiB')
        >>> [batch.batch_size for batch in SubjectsLoader(queue, batch_size=5)]
        [5, 5, 2]
    """

    def __init__(
        self,
        subjects: Sequence[Subject],
        patch_sampler: PatchSampler,
        max_length: int = 300,
        patches_per_volume: int = 10,
        num_workers: int = 0,
        shuffle_subjects: bool = True,
        shuffle_patches: bool = True,
        transform: TransformLike | None = None,
        subject_sampler: Any = None,
        seed: int | None = None,
    ) -> None:
        if not isinstance(subjects, Sized) or not hasattr(subjects, "__getitem__"):
            raise VoxelflowTypeError(
                f"Queue: subjects must be a sequence of Subject (a list or a map-style dataset), "
                f"got {type(subjects).__name__}"
            )
        if len(subjects) == 0:
            raise VoxelflowValueError("Queue: the list of subjects is empty")
        if not isinstance(patch_sampler, PatchSampler):
            raise VoxelflowTypeError(
                f"Queue: patch_sampler must be a voxelflow PatchSampler (UniformSampler, "
                f"LabelSampler, GridSampler...), got {type(patch_sampler).__name__}"
            )
        for name, value in (("max_length", max_length), ("patches_per_volume", patches_per_volume)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise VoxelflowValueError(f"Queue: {name} must be a positive int, got {value!r}")
        if patches_per_volume > max_length:
            raise VoxelflowValueError(
                f"Queue: patches_per_volume={patches_per_volume} exceeds max_length={max_length}; "
                "the patches of one subject must fit in the queue: raise max_length or lower "
                "patches_per_volume"
            )
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise VoxelflowValueError(
                f"Queue: num_workers must be an int >= 0, got {num_workers!r}"
            )
        if subject_sampler is not None and not (
            hasattr(subject_sampler, "__iter__") and hasattr(subject_sampler, "__len__")
        ):
            raise VoxelflowTypeError(
                "Queue: subject_sampler must be a sampler of subject indices with a length, "
                f"e.g. DistributedSampler(subjects); got {type(subject_sampler).__name__}"
            )
        if transform is not None and not callable(transform):
            raise VoxelflowTypeError(
                f"Queue: transform must be callable, got {type(transform).__name__}"
            )
        self.subjects = subjects
        self.patch_sampler = patch_sampler
        self.max_length = max_length
        self.patches_per_volume = patches_per_volume
        self.num_workers = num_workers
        self.shuffle_subjects = bool(shuffle_subjects)
        self.shuffle_patches = bool(shuffle_patches)
        self.transform = transform
        self.subject_sampler = subject_sampler
        self.seed = fresh_seed(seed)
        self.whole_transform, self.patch_transform = split_transform(transform)
        self._epoch = 0
        self._epoch_override: int | None = None

    # ------------------------------------------------------------ sizes
    @property
    def num_subjects(self) -> int:
        """Subjects in an epoch (``len(subject_sampler)`` when there is one)."""
        return len(self.subject_sampler) if self.subject_sampler is not None else len(self.subjects)

    @property
    def patches_per_epoch(self) -> int:
        """Patches an epoch yields, summed over DataLoader workers."""
        return self.num_subjects * self.patches_per_volume

    def __len__(self) -> int:
        return self.patches_per_epoch

    @property
    def max_memory(self) -> int:
        """Bytes of ``max_length`` patches like the first subject's as the buffer holds them
        (after the whole-volume transform, before the patchwise one), of the patches being
        transformed ahead of the loop by the threads, in the dtypes the transform gives), plus
        the volumes
        read whole while subjects are prepared: with a whole-volume transform every image,
        otherwise the images whose region reads cost more than the volume (a ``.nii.gz``
        stream, a whole-volume fallback), one subject per worker (sizes from the header)."""
        subject = self.subjects[0]
        patch_voxels = math.prod(self.patch_sampler.patch_size)
        buffered = transformed = whole = 0
        for image in subject.images.values():
            header = copy.copy(image)  # reading headers must not touch the caller's image
            stored = final = header.dtype
            if self.whole_transform is None:
                stored = _buffer_dtype(header)
            else:
                stored = _output_dtype(self.whole_transform, image.type, stored)
            if self.transform is not None:
                final = _output_dtype(self.transform, image.type, final)
            voxels = header.num_channels * patch_voxels
            buffered += voxels * _itemsize(stored)
            transformed += voxels * _itemsize(final)
            volume = header.num_channels * math.prod(header.spatial_shape)
            if self.whole_transform is not None:
                whole += volume * _itemsize(stored)
            elif reads_whole(header):
                whole += volume * _itemsize(stored)  # read whole, as buffered, before cutting
        being_transformed = LOOKAHEAD * transformed if self.num_workers else 0
        return self.max_length * buffered + being_transformed + max(1, self.num_workers) * whole

    @property
    def max_memory_pretty(self) -> str:
        return pretty_bytes(self.max_memory)

    # ------------------------------------------------------------ epochs
    def set_epoch(self, epoch: int) -> None:
        """Fix the epoch number that seeds the next iterations (as ``DistributedSampler``)."""
        self._epoch_override = int(epoch)

    def _epoch_key(self) -> list[int]:
        worker = get_worker_info()
        if self._epoch_override is not None:
            return [0, self._epoch_override]
        if worker is not None:  # one base seed per DataLoader epoch, shared by its workers
            return [1, worker.seed - worker.id]
        epoch = self._epoch
        self._epoch += 1
        return [0, epoch]

    def plan(self) -> tuple[list[tuple[int, int]], torch.Generator]:
        """This process's ``(subject index, subject seed)`` list for one epoch, and the
        generator of the patch shuffle. Advances the epoch."""
        key = self._epoch_key()
        generator = make_generator(derive_seed(self.seed, *key, 0))
        if self.subject_sampler is not None:
            order = [int(i) for i in self.subject_sampler]
        else:
            order = list(range(len(self.subjects)))
        if self.shuffle_subjects:
            order = [order[i] for i in torch.randperm(len(order), generator=generator).tolist()]
        tasks = [
            (index, derive_seed(self.seed, *key, 1, place)) for place, index in enumerate(order)
        ]
        worker = get_worker_info()
        if worker is not None:  # split the subjects, do not repeat them, across processes
            tasks = tasks[worker.id :: worker.num_workers]
            generator.manual_seed(derive_seed(self.seed, *key, 2, worker.id))
        return tasks, generator

    # ------------------------------------------------------------ producing
    def produce(self, index: int, seed: int, stop: threading.Event | None = None) -> list[Produced]:
        """The patches of subject ``index`` (copies, not yet through the patchwise transform,
        maybe in their stored dtype), each with the seed of its transform and the dtypes its
        images become as they leave the buffer, all drawn with ``seed``."""
        try:
            return self._produce(index, seed, stop)
        except Exception as error:
            where = f"subject {index}"
            subject = self.subjects[index] if 0 <= index < len(self.subjects) else None
            if isinstance(subject, Subject):
                where += f" ({subject_name(subject)})"
            error.add_note(f"(while the Queue prepared {where})")
            raise

    def _produce(self, index: int, seed: int, stop: threading.Event | None) -> list[Produced]:
        subject = self.subjects[index]
        if not isinstance(subject, Subject):
            raise VoxelflowTypeError(
                f"Queue: subjects[{index}] is a {type(subject).__name__}, not a voxelflow Subject"
            )
        generator = make_generator(seed)
        working = private_copy(subject)
        convert: dict[str, torch.dtype] = {}
        for name, image in working.images.items():
            if self.whole_transform is None and _buffer_dtype(image) != image.dtype:
                convert[name] = image.dtype
                image.to(image.stored_dtype)  # unloaded: only what reads give changes
            if reads_whole(image):
                image.load()
        if self.whole_transform is not None:
            working = _apply(self.whole_transform, working, generator)
        locations = self.patch_sampler.sample_locations(working, self.patches_per_volume, generator)
        if len(locations) != self.patches_per_volume:
            raise VoxelflowRuntimeError(
                f"Queue: {type(self.patch_sampler).__name__} gave {len(locations)} locations for "
                f"subject {index}, {self.patches_per_volume} were asked for"
            )
        patches = []
        for location in locations:
            if stop is not None and stop.is_set():
                return []
            patch = self.patch_sampler.extract(working, location)
            patches.append((patch, seed_from(generator), convert))
        return patches

    def finish(
        self, patch: Subject, seed: int, convert: dict[str, torch.dtype] | None = None
    ) -> Subject:
        """A patch taken from the buffer: its images converted to ``data``'s dtype where
        they waited as stored (``convert``), then the patchwise part of the transform."""
        for name, dtype in (convert or {}).items():
            image = patch[name]
            image.set_data(_dtype.convert(image.data, dtype, str(image.path or name)))
        if self.patch_transform is None:
            return patch
        try:
            return _apply(self.patch_transform, patch, make_generator(seed))
        except Exception as error:
            location = patch.get("patch_location")
            where = f" at {location.index}" if isinstance(location, PatchLocation) else ""
            error.add_note(f"(while the Queue transformed a patch of {subject_name(patch)}{where})")
            raise

    # ------------------------------------------------------------ consuming
    def __iter__(self) -> Iterator[Subject]:
        tasks, generator = self.plan()
        return self._stream(deque(tasks), generator)

    def _stream(
        self, pending: deque[tuple[int, int]], generator: torch.Generator
    ) -> Iterator[Subject]:
        per_volume, max_length = self.patches_per_volume, self.max_length
        workers = self.num_workers
        executor = transformer = None
        if workers:
            executor = ThreadPoolExecutor(workers, thread_name_prefix="voxelflow-queue")
            transformer = ThreadPoolExecutor(
                workers, thread_name_prefix="voxelflow-queue-transform"
            )
        stop = threading.Event()
        futures: deque[Future[list[Produced]]] = deque()
        # patches taken out of the buffer, in hand-out order: being transformed by the
        # threads (futures), or waiting to be transformed inline. Always LOOKAHEAD of them
        # when the buffer allows, with or without threads, so the shuffle draws the same
        # patches in the same order whatever num_workers is
        ready: deque[Future[Subject] | Produced] = deque()
        buffer: list[Produced] = []
        head = 0  # first unread patch of the buffer when patches are not shuffled

        def take() -> Produced:
            nonlocal head
            if self.shuffle_patches:
                pick = int(torch.randint(0, len(buffer), (), generator=generator))
                buffer[pick], buffer[-1] = buffer[-1], buffer[pick]
                return buffer.pop()
            item = buffer[head]
            buffer[head] = None  # type: ignore[call-overload]
            head += 1
            return item

        try:
            while True:
                held = len(buffer) - head + len(ready)
                if executor is not None:
                    while (
                        pending
                        and len(futures) < 2 * workers
                        and held + len(futures) * per_volume + per_volume <= max_length
                    ):
                        futures.append(executor.submit(self.produce, *pending.popleft(), stop))
                can_take = bool(futures or pending) and held + per_volume <= max_length
                if can_take and (self.shuffle_patches or held == 0):
                    if executor is not None:
                        patches = futures.popleft().result()  # blocks; re-raises a worker's error
                    else:
                        patches = self.produce(*pending.popleft())
                    if head:
                        del buffer[:head]
                        head = 0
                    buffer.extend(patches)
                    continue
                if held == 0:
                    return
                while len(ready) < LOOKAHEAD and len(buffer) > head:
                    item = take()
                    ready.append(
                        item if transformer is None else transformer.submit(self.finish, *item)
                    )
                first = ready.popleft()
                yield first.result() if isinstance(first, Future) else self.finish(*first)
        finally:
            stop.set()
            for future in futures:
                future.cancel()
            for waiting in ready:
                if isinstance(waiting, Future):
                    waiting.cancel()
            for pool in (executor, transformer):
                if pool is not None:
                    pool.shutdown(wait=True, cancel_futures=True)

    def __repr__(self) -> str:
        return (
            f"Queue(subjects: {len(self.subjects)}; sampler: {self.patch_sampler!r}; "
            f"max_length: {self.max_length}; patches_per_volume: {self.patches_per_volume}; "
            f"num_workers: {self.num_workers}; patches_per_epoch: {self.patches_per_epoch})"
        )
