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
   headers and sampling tables), read just those regions (copies), and apply
   the patchwise part of the transform to each patch. Without a whole-volume
   transform a ``.nii`` subject is never read whole; sources without cheap
   region reads (``.nii.gz``) are read once, whole, by the worker and dropped
   when its patches are cut.
3. **Consume.** Results are taken in plan order into a buffer; with
   ``shuffle_patches`` the buffer is filled as far as ``max_length`` allows and
   a random patch is handed out each time (a shuffle buffer); otherwise
   patches come first in, first out.

Bounds: patches in the buffer plus patches of subjects submitted to the
workers never exceed ``max_length`` (a subject is submitted only when its
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

from voxelflow._errors import VoxelflowRuntimeError, VoxelflowTypeError, VoxelflowValueError
from voxelflow._format import pretty_bytes
from voxelflow._random import derive_seed, fresh_seed, make_generator
from voxelflow.image import INTENSITY
from voxelflow.patches.base import PatchSampler
from voxelflow.patches.reading import private_copy, reads_whole, subject_name
from voxelflow.subject import Subject
from voxelflow.transforms.transform import Transform

TransformLike = Callable[..., Any]


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
        (12, '16.0 KiB')
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
        """Bytes of ``max_length`` patches like the first subject's (real dtypes, after the
        transform), plus the volumes read whole while subjects are prepared: with a
        whole-volume transform every image, otherwise the images whose region reads cost
        more than the volume (a ``.nii.gz`` stream, a whole-volume fallback), one subject
        per worker (their size from the header)."""
        subject = self.subjects[0]
        patch_voxels = math.prod(self.patch_sampler.patch_size)
        per_patch = whole = 0
        for image in subject.images.values():
            header = copy.copy(image)  # reading headers must not touch the caller's image
            dtype = header.dtype
            if self.transform is not None and hasattr(self.transform, "output_dtype"):
                dtype = self.transform.output_dtype(image.type, dtype)
            itemsize = torch.empty((), dtype=dtype).element_size()
            per_patch += header.num_channels * patch_voxels * itemsize
            volume = header.num_channels * math.prod(header.spatial_shape)
            if self.whole_transform is not None:
                whole += volume * itemsize
            elif reads_whole(header):
                whole += header.memory  # read whole, in its own dtype, before cutting
        return self.max_length * per_patch + max(1, self.num_workers) * whole

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
    def produce(self, index: int, seed: int, stop: threading.Event | None = None) -> list[Subject]:
        """The patches of subject ``index`` (copies), drawn with ``seed``."""
        try:
            return self._produce(index, seed, stop)
        except Exception as error:
            where = f"subject {index}"
            subject = self.subjects[index] if 0 <= index < len(self.subjects) else None
            if isinstance(subject, Subject):
                where += f" ({subject_name(subject)})"
            error.add_note(f"(while the Queue prepared {where})")
            raise

    def _produce(self, index: int, seed: int, stop: threading.Event | None) -> list[Subject]:
        subject = self.subjects[index]
        if not isinstance(subject, Subject):
            raise VoxelflowTypeError(
                f"Queue: subjects[{index}] is a {type(subject).__name__}, not a voxelflow Subject"
            )
        generator = make_generator(seed)
        working = private_copy(subject, reads_whole)
        if self.whole_transform is not None:
            working = _apply(self.whole_transform, working, generator)
        locations = self.patch_sampler.sample_locations(working, self.patches_per_volume, generator)
        if len(locations) != self.patches_per_volume:
            raise VoxelflowRuntimeError(
                f"Queue: {type(self.patch_sampler).__name__} gave {len(locations)} locations for "
                f"subject {index}, {self.patches_per_volume} were asked for"
            )
        dtypes = self._read_dtypes(working)
        patches = []
        for location in locations:
            if stop is not None and stop.is_set():
                return []
            patch = self.patch_sampler.extract(working, location, dtypes)
            if self.patch_transform is not None:
                patch = _apply(self.patch_transform, patch, generator)
            patches.append(patch)
        return patches

    def _read_dtypes(self, subject: Subject) -> dict[str, torch.dtype]:
        """Intensity images the patchwise transform turns from integers into floats are
        read as floats straight away: the same values, one pass fewer per patch."""
        transform = self.patch_transform
        output_dtype = getattr(transform, "output_dtype", None)
        if output_dtype is None:
            return {}
        dtypes = {}
        for name, image in subject.images.items():
            stored = image.dtype
            wanted = output_dtype(image.type, stored)
            if (
                image.type == INTENSITY
                and not stored.is_floating_point
                and wanted.is_floating_point
            ):
                dtypes[name] = wanted
        return dtypes

    # ------------------------------------------------------------ consuming
    def __iter__(self) -> Iterator[Subject]:
        tasks, generator = self.plan()
        return self._stream(deque(tasks), generator)

    def _stream(
        self, pending: deque[tuple[int, int]], generator: torch.Generator
    ) -> Iterator[Subject]:
        per_volume, max_length = self.patches_per_volume, self.max_length
        workers = self.num_workers
        executor = (
            ThreadPoolExecutor(workers, thread_name_prefix="voxelflow-queue") if workers else None
        )
        stop = threading.Event()
        futures: deque[Future[list[Subject]]] = deque()
        buffer: list[Subject] = []
        head = 0  # first unread patch of the buffer when patches are not shuffled
        try:
            while True:
                held = len(buffer) - head
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
                if self.shuffle_patches:
                    pick = int(torch.randint(0, len(buffer), (), generator=generator))
                    buffer[pick], buffer[-1] = buffer[-1], buffer[pick]
                    yield buffer.pop()
                else:
                    patch = buffer[head]
                    buffer[head] = None  # type: ignore[call-overload]
                    head += 1
                    yield patch
        finally:
            stop.set()
            for future in futures:
                future.cancel()
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)

    def __repr__(self) -> str:
        return (
            f"Queue(subjects: {len(self.subjects)}; sampler: {self.patch_sampler!r}; "
            f"max_length: {self.max_length}; patches_per_volume: {self.patches_per_volume}; "
            f"num_workers: {self.num_workers}; patches_per_epoch: {self.patches_per_epoch})"
        )
