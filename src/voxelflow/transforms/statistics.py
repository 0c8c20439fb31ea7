"""Statistics of whole volumes in bounded memory: moments, exact quantiles, label sets.

Transforms that need a statistic of the whole image (``ZNormalization``'s mean
and standard deviation, ``Normalize``'s percentiles, ``HistogramStandardization``'s
landmarks, ``SequentialLabels``' set of labels, a ``"mean"`` padding value)
compute it here, then map the image lazily. Every statistic is computed in
streaming passes over slabs of the volume (at most :data:`SLAB_VOXELS` voxels
at a time, along the last axis, the order NIfTI stores voxels in), so the
memory it takes does not grow with the volume.

* :func:`moments`: count, mean, standard deviation (TorchIO's: ``correction=1``),
  minimum and maximum, in **one pass** (Chan's pairwise combination in float64).
* :func:`quantiles`: **exact** quantiles, equal to ``numpy.quantile`` (linear
  interpolation between order statistics, NumPy's formula), without holding
  the volume: a radix selection on order-preserving integer keys of the
  values. The first pass gives the moments and a histogram of the keys' top
  :data:`DIGIT_BITS` bits (with each bin's smallest and largest value); each
  further pass resolves the next bits of the bins that hold the wanted order
  statistics, or gathers and sorts their values once a bin holds at most
  :data:`GATHER_LIMIT` of them. A bin of equal values is resolved at once.
  Images of 8 or 16 bits take one pass, 32-bit ones (float32, int32) at most
  two; quantiles 0 and 1 are the minimum and maximum (the moments' pass).
* :func:`unique_values`: the sorted set of values (label maps), one pass.

Results are cached by the source backend's ``cache_key`` when it has one (a
file's path, size and modification time), else per backend object (weakly,
dropped with it); in-memory tensors are not cached (they may change in place).
A ``mask`` (a label backend whose non-zero voxels are selected, or an
in-memory boolean tensor) restricts every statistic to its voxels.

Example:
    >>> import numpy as np, torch
    >>> from voxelflow.backends import TensorBackend
    >>> from voxelflow.transforms.statistics import Selection, moments, quantiles
    >>> values = torch.arange(101.0).reshape(1, 101, 1, 1)
    >>> selection = Selection(TensorBackend(values))
    >>> moments(selection).mean, quantiles(selection, [0.1, 0.905])
    (50.0, [10.0, 90.5])
"""

from __future__ import annotations

import contextlib
import math
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from voxelflow._errors import VoxelflowValueError
from voxelflow._indexing import Box
from voxelflow.backends.base import BackendProtocol

SLAB_VOXELS = 1 << 20
"""Most voxels (all channels together) read and summarised at once."""

GATHER_LIMIT = 1 << 16
"""Most values gathered (then sorted) for a wanted order statistic; a bin holding more is
refined by the next digit instead."""

Mask = BackendProtocol | torch.Tensor | None
Result = TypeVar("Result")


@dataclass(frozen=True, eq=False)
class Selection:
    """The voxels a statistic summarises: every value of ``source`` (all channels), or
    those where ``mask`` is non-zero.

    Args:
        source: the image's backend.
        mask: ``None``, a backend of a label map, or a boolean tensor, of shape
            ``(C or 1, I, J, K)``: with the image's ``C`` channels it selects per
            channel, else its channels are combined with "any" for every channel.
        label: names the image in error messages.

    Example:
        >>> import torch
        >>> from voxelflow.backends import TensorBackend
        >>> from voxelflow.transforms.statistics import Selection, moments
        >>> data = torch.tensor([1.0, 2.0, 3.0, 10.0]).reshape(1, 4, 1, 1)
        >>> inside = torch.tensor([True, True, True, False]).reshape(1, 4, 1, 1)
        >>> moments(Selection(TensorBackend(data), inside)).maximum
        3.0
    """

    source: BackendProtocol
    mask: Mask = None
    label: str = "image"

    def __post_init__(self) -> None:
        if self.mask is not None and tuple(self.mask.shape[1:]) != tuple(self.source.shape[1:]):
            raise VoxelflowValueError(
                f"{self.label}: the mask's spatial shape {tuple(self.mask.shape[1:])} differs "
                f"from the image's {tuple(self.source.shape[1:])}; pass a mask on the same grid"
            )


@dataclass(frozen=True)
class Moments:
    """Summary of the selected voxels (float64 arithmetic).

    Attributes:
        count: number of selected values (voxels × channels).
        mean: their mean.
        std: their standard deviation with Bessel's correction (as TorchIO and
            ``torch.std``); 0 for a single value.
        minimum: the smallest value.
        maximum: the largest value.

    Example:
        >>> import torch
        >>> from voxelflow.backends import TensorBackend
        >>> from voxelflow.transforms.statistics import Selection, moments
        >>> found = moments(Selection(TensorBackend(torch.tensor([1.0, 3.0]).reshape(1, 2, 1, 1))))
        >>> found.count, found.mean, round(found.std, 4)
        (2, 2.0, 1.4142)
    """

    count: int
    mean: float
    std: float
    minimum: float
    maximum: float


# ---------------------------------------------------------------------- slabs
def _region_cost(backend: BackendProtocol) -> str:
    # The backend contract's ``region_cost`` (landing with the backends work); until then
    # a backend without region reads costs a whole read per read.
    cost = getattr(backend, "region_cost", None)
    if cost is not None:
        return str(cost)
    return "proportional" if backend.region_reads else "whole"


def _slab_boxes(shape: Sequence[int]) -> Iterator[Box]:
    channels, size_i, size_j, size_k = (int(n) for n in shape)
    step = max(1, SLAB_VOXELS // max(1, channels * size_i * size_j))
    for start in range(0, size_k, step):
        yield (
            slice(0, channels, 1),
            slice(0, size_i, 1),
            slice(0, size_j, 1),
            slice(start, min(size_k, start + step), 1),
        )


def _mask_box(mask: Mask, box: Box, channels: int) -> torch.Tensor | None:
    """Boolean mask of ``box``'s spatial region: per channel when the mask has the
    image's channels, else one channel ("any" of the mask's) for all."""
    if mask is None:
        return None
    spatial = box[1:]
    if isinstance(mask, torch.Tensor):
        region = mask[(slice(None), *spatial)]
    else:
        region = mask.read((slice(0, mask.shape[0], 1), *spatial))
    region = region.cpu() != 0
    if region.shape[0] == channels:
        return region
    return region.any(dim=0, keepdim=True)


def iter_values(selection: Selection, native: bool = False) -> Iterator[torch.Tensor]:
    """The selected values, slab by slab, as 1-D tensors on the CPU (float64, or the
    source's dtype if ``native``)."""
    source = selection.source
    whole = None
    if source.in_memory or _region_cost(source) == "whole":
        whole = source.read(None)
    for box in _slab_boxes(source.shape):
        data = whole[box] if whole is not None else source.read(box)
        data = data.cpu()
        mask = _mask_box(selection.mask, box, data.shape[0])
        values = data[mask.expand_as(data)] if mask is not None else data.reshape(-1)
        yield values if native else values.to(torch.float64)


# ---------------------------------------------------------------------- cache
class _Cache:
    """Results by (identity of the selection, what was computed); thread-safe."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._keyed: OrderedDict[Hashable, Any] = OrderedDict()
        self._weak: weakref.WeakKeyDictionary[Any, dict[Hashable, Any]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    @staticmethod
    def _identity(selection: Selection) -> tuple[Hashable | None, Any | None]:
        """``(key, None)`` for keyed storage, ``(None, owner)`` for weak storage, or neither."""
        source, mask = selection.source, selection.mask
        if source.in_memory or isinstance(mask, torch.Tensor):
            return None, None
        source_key = getattr(source, "cache_key", None)  # the backend contract's cache_key
        if mask is None:
            if source_key is not None:
                return ("stats", source_key, None), None
            return None, source
        mask_key = getattr(mask, "cache_key", None)
        if source_key is not None and mask_key is not None and not mask.in_memory:
            return ("stats", source_key, mask_key), None
        return None, None

    def get(self, selection: Selection, what: Hashable, compute: Callable[[], Result]) -> Result:
        key, owner = self._identity(selection)
        with self._lock:
            if key is not None and (key, what) in self._keyed:
                self._keyed.move_to_end((key, what))
                return self._keyed[(key, what)]  # type: ignore[no-any-return]
            if owner is not None:
                found = self._weak.get(owner, {})
                if what in found:
                    return found[what]  # type: ignore[no-any-return]
        result = compute()
        with self._lock:
            if key is not None:
                self._keyed[(key, what)] = result
                while len(self._keyed) > self.size:
                    self._keyed.popitem(last=False)
            elif owner is not None:
                # an owner that cannot be weakly referenced: no caching
                with contextlib.suppress(TypeError):
                    self._weak.setdefault(owner, {})[what] = result
        return result

    def clear(self) -> None:
        with self._lock:
            self._keyed.clear()
            self._weak.clear()


CACHE = _Cache()
"""The statistics computed so far (``CACHE.clear()`` forgets them)."""


# ---------------------------------------------------------------------- moments
def moments(selection: Selection) -> Moments:
    """Count, mean, standard deviation, minimum and maximum, in one streaming pass.

    Raises:
        VoxelflowValueError: if nothing is selected (an empty mask).
    """
    return CACHE.get(selection, "moments", lambda: _compute_moments(selection))


def _compute_moments(selection: Selection) -> Moments:
    accumulator = _MomentsAccumulator(selection.label)
    for values in iter_values(selection, native=True):
        accumulator.add(values)
    return accumulator.result()


class _MomentsAccumulator:
    """Chan's pairwise combination of per-slab moments (float64)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.count, self.mean, self.m2 = 0, 0.0, 0.0
        self.low, self.high = math.inf, -math.inf

    def add(self, values: torch.Tensor) -> None:
        n = values.numel()
        if n == 0:
            return
        values = values.to(torch.float64)
        variance, mean = torch.var_mean(values, correction=0)
        slab_mean, slab_m2 = float(mean), float(variance) * n
        total = self.count + n
        delta = slab_mean - self.mean
        self.mean += delta * n / total
        self.m2 += slab_m2 + delta * delta * self.count * n / total
        self.count = total
        low, high = torch.aminmax(values)
        self.low = min(self.low, float(low))
        self.high = max(self.high, float(high))
        if math.isnan(slab_mean):
            self.low = self.high = math.nan

    def result(self) -> Moments:
        if self.count == 0:
            raise VoxelflowValueError(
                f"{self.label}: the mask selects no voxel; check the mask (it must be "
                "non-zero inside the region of interest and on the image's grid)"
            )
        std = math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 0.0
        return Moments(self.count, self.mean, std, self.low, self.high)


# ---------------------------------------------------------------------- quantiles
def quantiles(selection: Selection, qs: Sequence[float]) -> list[float]:
    """Exact quantiles ``qs`` (each in ``[0, 1]``) of the selected values, as
    ``numpy.quantile(values, qs)`` (default linear method) computes them.

    Raises:
        VoxelflowValueError: for a quantile outside ``[0, 1]``, an empty selection,
            or values that are NaN or infinite.
    """
    qs = [float(q) for q in qs]
    for q in qs:
        if not 0.0 <= q <= 1.0:
            raise VoxelflowValueError(
                f"{selection.label}: quantile {q} is outside [0, 1] (percentiles are 0 to 100)"
            )
    if all(q in (0.0, 1.0) for q in qs):  # the extremes: one pass for the moments
        stats = moments(selection)
        return [stats.minimum if q == 0.0 else stats.maximum for q in qs]
    return CACHE.get(selection, ("quantiles", tuple(qs)), lambda: _compute_quantiles(selection, qs))


def _lerp(a: float, b: float, t: float) -> float:
    # NumPy's _lerp: exact at both ends, monotonic
    diff = b - a
    return b - diff * (1.0 - t) if t >= 0.5 else a + diff * t


def _compute_quantiles(selection: Selection, qs: list[float]) -> list[float]:
    # The first pass gives the moments (count, extremes) and the histogram of the keys'
    # highest digit together; the moments are cached for later callers.
    first = _Target(0, -1, 0, [], gather=False)
    accumulator = _MomentsAccumulator(selection.label)
    (histogram,) = _one_pass(selection, [first], accumulator)
    stats = accumulator.result()
    CACHE.get(selection, "moments", lambda: stats)
    if not (math.isfinite(stats.minimum) and math.isfinite(stats.maximum)):
        raise VoxelflowValueError(
            f"{selection.label}: the image holds NaN or infinite values, so its percentiles "
            "are undefined; replace them first (e.g. tio.Lambda(torch.nan_to_num))"
        )
    count = stats.count
    plan = []
    wanted: set[int] = set()
    for q in qs:
        index = (count - 1) * q  # NumPy's linear method (its default)
        below = min(max(math.floor(index), 0), count - 1)
        above = min(below + 1, count - 1)
        plan.append((below, above, index - below))
        wanted.update((below, above))
    values = select_ranks(selection, sorted(wanted), stats, histogram)
    return [_lerp(values[below], values[above], gamma) for below, above, gamma in plan]


DIGIT_BITS = 16
"""Bits of the sort key resolved by each histogram pass of :func:`select_ranks`."""


def sort_keys(values: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Order-preserving int64 keys of ``values`` and how many low bits they use.

    Floats map their bit patterns (negative values flipped), integers are offset to
    be non-negative; 64-bit types use all 64 bits, with the sign bit flipped so
    that the two's-complement bit patterns sort as unsigned numbers.
    """
    dtype = values.dtype
    if dtype == torch.bool:
        return values.to(torch.int64), 1
    if dtype in (torch.float64, torch.int64):
        bits = values.view(torch.int64) if dtype == torch.float64 else values
        if dtype == torch.float64:
            return torch.where(bits < 0, ~bits, bits ^ _SIGN64), 64
        return bits ^ _SIGN64, 64
    if dtype.is_floating_point:
        width = torch.finfo(dtype).bits
        view = {32: torch.int32, 16: torch.int16}[width]
        bits = values.view(view).to(torch.int64)
        return torch.where(bits < 0, ~bits, bits + (1 << (width - 1))), width
    info = torch.iinfo(dtype)
    return values.to(torch.int64) - info.min, info.bits


_SIGN64 = -(1 << 63)


@dataclass
class _Target:
    """Keys whose bits above ``shift`` equal ``prefix``; ``before`` selected values have
    smaller keys; ``ranks`` are the wanted order statistics among them."""

    prefix: int
    shift: int
    before: int
    ranks: list[int]
    gather: bool


def select_ranks(
    selection: Selection, ranks: Sequence[int], stats: Moments, first: Any = None
) -> dict[int, float]:
    """The order statistics ``ranks`` (0-based, ascending) of the selected values.

    A radix selection on order-preserving keys: each pass histograms the next
    :data:`DIGIT_BITS` bits of the keys that share a wanted prefix (with each
    bin's smallest and largest value, so a bin of equal values is resolved at
    once); a bin holding at most :data:`GATHER_LIMIT` values is gathered and
    sorted in the next pass instead. 32-bit types take at most two passes.
    ``first`` is the histogram of the highest digit if a pass already made it.
    """
    known: dict[int, float] = {}
    pending: list[int] = []
    for rank in ranks:
        if rank == 0:
            known[rank] = stats.minimum
        elif rank == stats.count - 1:
            known[rank] = stats.maximum
        else:
            pending.append(rank)
    if not pending:
        return known
    targets = [_Target(0, -1, 0, pending, gather=False)]  # shift -1: every key
    while targets:
        if first is not None:
            counted, first = [first], None
        else:
            counted = _one_pass(selection, targets)
        following: dict[tuple[int, int], _Target] = {}
        for target, result in zip(targets, counted, strict=True):
            if target.gather:
                ordered = torch.sort(result).values
                for rank in target.ranks:
                    known[rank] = float(ordered[rank - target.before])
                continue
            counts, lows, highs, width, shift = result  # shift: bits below this digit
            cumulative = counts.cumsum(0)
            for rank in target.ranks:
                digit = int(
                    torch.searchsorted(cumulative, torch.tensor(rank - target.before), right=True)
                )
                before = target.before + (int(cumulative[digit - 1]) if digit > 0 else 0)
                low, high = float(lows[digit]), float(highs[digit])
                if low == high or shift == 0:
                    known[rank] = low
                    continue
                prefix = (target.prefix << width) | digit
                key = (prefix, shift)
                if key not in following:
                    gather = int(counts[digit]) <= GATHER_LIMIT
                    following[key] = _Target(prefix, shift, before, [], gather)
                following[key].ranks.append(rank)
        targets = list(following.values())
    return known


def _one_pass(
    selection: Selection, targets: list[_Target], accumulator: _MomentsAccumulator | None = None
) -> list[Any]:
    """For each target: the histogram ``(counts, lows, highs, width, shift)`` of its next
    ``width`` bits (``shift`` bits remain below them), or (``gather``) its values; one
    pass over the selection (which also feeds ``accumulator``)."""
    results: list[Any] = [None] * len(targets)
    bins = 1 << DIGIT_BITS
    for values in iter_values(selection, native=True):
        if accumulator is not None:
            accumulator.add(values)
        keys, nbits = sort_keys(values)
        for shift, numbers in _by_shift(targets, nbits).items():
            if shift == nbits:  # the first pass: every key
                members = [(numbers[0], values, keys)]
            else:
                top = (keys >> shift) & ((1 << (nbits - shift)) - 1)
                prefixes = torch.tensor([targets[n].prefix for n in numbers], dtype=torch.int64)
                if nbits - shift <= DIGIT_BITS:  # a short prefix: a lookup table
                    table = torch.full((1 << (nbits - shift),), -1, dtype=torch.int64)
                    table[prefixes] = torch.arange(len(numbers))
                    found = table[top]
                    hit = found >= 0
                    which = found[hit]
                else:
                    order = torch.argsort(prefixes)
                    slot = torch.searchsorted(prefixes[order], top).clamp_(max=len(numbers) - 1)
                    hit = prefixes[order][slot] == top
                    which = order[slot[hit]]
                x, k = values[hit], keys[hit]
                members = [(n, x[which == i], k[which == i]) for i, n in enumerate(numbers)]
            for number, x, k in members:
                target = targets[number]
                if target.gather:
                    part = x.to(torch.float64)
                    previous = results[number]
                    results[number] = part if previous is None else torch.cat([previous, part])
                    continue
                low_shift = max(0, shift - DIGIT_BITS)
                digits = (k >> low_shift) & ((1 << (shift - low_shift)) - 1)
                if results[number] is None:
                    results[number] = (
                        torch.zeros(bins, dtype=torch.int64),
                        torch.full((bins,), math.inf, dtype=torch.float64),
                        torch.full((bins,), -math.inf, dtype=torch.float64),
                        shift - low_shift,
                        low_shift,
                    )
                counts, lows, highs, _, _ = results[number]
                x64 = x.to(torch.float64)
                counts += torch.bincount(digits, minlength=bins)
                lows.scatter_reduce_(0, digits, x64, "amin")
                highs.scatter_reduce_(0, digits, x64, "amax")
    for number in range(len(targets)):
        if results[number] is None:  # no value of the selection has the prefix
            results[number] = torch.empty(0, dtype=torch.float64)
    return results


def _by_shift(targets: list[_Target], nbits: int) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for number, target in enumerate(targets):
        groups.setdefault(nbits if target.shift < 0 else target.shift, []).append(number)
    return groups


# ---------------------------------------------------------------------- label sets
def unique_values(selection: Selection) -> list[float]:
    """The sorted distinct values of the selection (e.g. the labels of a label map), one pass."""
    return CACHE.get(selection, "unique", lambda: _compute_unique(selection))


def _compute_unique(selection: Selection) -> list[float]:
    found = torch.empty(0, dtype=torch.float64)
    for values in iter_values(selection):
        found = torch.unique(torch.cat([found, torch.unique(values)]))
    return [float(v) for v in found.tolist()]
