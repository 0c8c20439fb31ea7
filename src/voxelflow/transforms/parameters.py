"""Transform parameters: fixed values, uniform ranges, choices and distributions.

One parser for every transform, with TorchIO 2.0's conventions:

* a number is fixed, the same along the three axes: ``10`` → ``(10, 10, 10)``;
* ``(low, high)`` is random, drawn uniformly for each axis: ``(-10, 10)``;
* three numbers are fixed per axis: ``(0, 0, 90)``;
* six numbers are a range per axis: ``(-10, 10, 0, 0, -5, 5)``;
* a :class:`Choice` draws from a set of values; a
  ``torch.distributions.Distribution`` draws from the distribution;
* a 3-tuple may mix the forms per axis: ``(0, Choice([-90, 90]), (-5, 5))``.

Unlike TorchIO, every draw takes the caller's ``torch.Generator``, including
draws from a ``Distribution`` (through its inverse CDF when it has one, else
under a lock on a forked global generator seeded from the caller's), so a
seed reproduces a stream whatever the threads do.

TorchIO 1.x's conventions (``RandomAffine(degrees=10)`` meaning ``(-10, 10)``,
``scales=0.1`` meaning ``(0.9, 1.1)``) are the job of the aliases, through
:func:`symmetric_range`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import torch
from torch.distributions import Distribution

from voxelflow._errors import VoxelflowTypeError, VoxelflowValueError
from voxelflow._random import seed_from

__all__ = ["Choice", "ParameterRange", "symmetric_range", "to_range"]

_GLOBAL_RNG_LOCK = threading.Lock()


class Choice:
    """A discrete set of values, each drawn with its probability (equal by default).

    Example:
        >>> import torch
        >>> from voxelflow.transforms.parameters import Choice
        >>> choice = Choice([-90, 0, 90])
        >>> choice.sample(torch.Generator().manual_seed(0)) in (-90.0, 0.0, 90.0)
        True
    """

    def __init__(
        self, values: Sequence[float], probabilities: Sequence[float] | None = None
    ) -> None:
        if len(values) == 0:
            raise VoxelflowValueError("Choice needs at least one value")
        self.values = torch.tensor([float(v) for v in values], dtype=torch.float64)
        if probabilities is None:
            weights = torch.ones(len(values), dtype=torch.float64)
        else:
            if len(probabilities) != len(values):
                raise VoxelflowValueError(
                    f"Choice: {len(values)} values but {len(probabilities)} probabilities"
                )
            weights = torch.tensor([float(p) for p in probabilities], dtype=torch.float64)
            if bool((weights < 0).any()) or float(weights.sum()) <= 0:
                raise VoxelflowValueError(
                    f"Choice: probabilities must be non-negative with a positive sum, got "
                    f"{list(probabilities)}"
                )
        self.probabilities = weights / weights.sum()

    def sample(self, generator: torch.Generator) -> float:
        index = int(torch.multinomial(self.probabilities, 1, generator=generator))
        return float(self.values[index])

    def bounds(self) -> tuple[float, float]:
        return float(self.values.min()), float(self.values.max())

    def __repr__(self) -> str:
        return f"Choice({self.values.tolist()})"


AxisSpec = float | tuple[float, float] | Choice | Distribution
ParameterValue = float | Sequence[Any] | Choice | Distribution


def _sample_distribution(distribution: Distribution, generator: torch.Generator) -> float:
    """One draw from ``distribution``, reproducible from ``generator``."""
    u = torch.rand((), generator=generator, dtype=torch.float64)
    try:
        return float(distribution.icdf(u.to(_distribution_dtype(distribution))))
    except NotImplementedError:
        pass
    with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_from(generator))
        return float(distribution.sample())


def _distribution_dtype(distribution: Distribution) -> torch.dtype:
    for value in vars(distribution).values():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.dtype
    return torch.float32


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class ParameterRange:
    """A parameter of a transform: three axis specifications, fixed or random.

    Args:
        value: a number, ``(low, high)``, three numbers, six numbers, a
            :class:`Choice`, a ``Distribution``, or a 3-tuple of per-axis specs.
        name: the parameter's name, for error messages (``"Affine degrees"``).
        nonnegative: refuse negative values (fixed or range bounds).
        bounds: ``(low, high)`` the values must lie within (``None``: no bound
            on that side); ranges and choices are checked, distributions are
            checked at each draw.

    Example:
        >>> import torch
        >>> from voxelflow.transforms.parameters import ParameterRange
        >>> g = torch.Generator().manual_seed(0)
        >>> ParameterRange((0, 0, 90), "degrees").sample(g)
        (0.0, 0.0, 90.0)
        >>> low, high = -10, 10
        >>> all(low <= v <= high for v in ParameterRange((low, high), "degrees").sample(g))
        True
    """

    def __init__(
        self,
        value: ParameterValue,
        name: str,
        *,
        nonnegative: bool = False,
        bounds: tuple[float | None, float | None] = (None, None),
    ) -> None:
        self.original = value
        self.name = name
        self.lower = 0.0 if nonnegative else bounds[0]
        if nonnegative and bounds[0] is not None:
            self.lower = max(0.0, float(bounds[0]))
        self.upper = bounds[1]
        self.axes = self._parse(value)
        for axis in self.axes:
            self._check_spec(axis)

    # ------------------------------------------------------------ parsing
    def _parse(self, value: ParameterValue) -> tuple[AxisSpec, AxisSpec, AxisSpec]:
        if _is_number(value):
            number = float(value)  # type: ignore[arg-type]
            return (number, number, number)
        if isinstance(value, Choice | Distribution):
            return (value, value, value)
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise VoxelflowTypeError(
                f"{self.name}: expected a number, (low, high), three or six numbers, a Choice or "
                f"a torch Distribution, got {type(value).__name__} {value!r}"
            )
        items = list(value)
        if len(items) == 3 and not all(_is_number(v) for v in items):
            return (
                self._parse_axis(items[0]),
                self._parse_axis(items[1]),
                self._parse_axis(items[2]),
            )
        if not all(_is_number(v) for v in items):
            raise VoxelflowTypeError(
                f"{self.name}: per-axis specifications need exactly three elements, got {value!r}"
            )
        numbers = [float(v) for v in items]
        if len(numbers) == 1:
            return (numbers[0], numbers[0], numbers[0])
        if len(numbers) == 2:
            pair = self._pair(numbers[0], numbers[1])
            return (pair, pair, pair)
        if len(numbers) == 3:
            return (numbers[0], numbers[1], numbers[2])
        if len(numbers) == 6:
            return (
                self._pair(numbers[0], numbers[1]),
                self._pair(numbers[2], numbers[3]),
                self._pair(numbers[4], numbers[5]),
            )
        raise VoxelflowValueError(
            f"{self.name}: expected 1, 2, 3 or 6 numbers, got {len(numbers)} ({value!r})"
        )

    def _parse_axis(self, spec: object) -> AxisSpec:
        if _is_number(spec):
            return float(spec)  # type: ignore[arg-type]
        if isinstance(spec, Choice | Distribution):
            return spec
        if isinstance(spec, Sequence) and len(spec) == 2 and all(_is_number(v) for v in spec):
            return self._pair(float(spec[0]), float(spec[1]))
        raise VoxelflowTypeError(
            f"{self.name}: each axis must be a number, (low, high), a Choice or a Distribution, "
            f"got {spec!r}"
        )

    def _pair(self, low: float, high: float) -> tuple[float, float]:
        if low > high:
            raise VoxelflowValueError(
                f"{self.name}: a range must be (low, high) with low <= high, got ({low}, {high})"
            )
        return (low, high)

    def _check_spec(self, spec: AxisSpec) -> None:
        if isinstance(spec, Distribution):
            return
        if isinstance(spec, Choice):
            low, high = spec.bounds()
        elif isinstance(spec, tuple):
            low, high = spec
        else:
            low = high = float(spec)
        self._check_value(low)
        self._check_value(high)

    def _check_value(self, value: float) -> None:
        if self.lower is not None and value < self.lower:
            raise VoxelflowValueError(
                f"{self.name} must be at least {self.lower:g}, got {value:g} (from "
                f"{self.original!r}); pass values within [{self.lower:g}, "
                f"{'inf' if self.upper is None else f'{self.upper:g}'}]"
            )
        if self.upper is not None and value > self.upper:
            raise VoxelflowValueError(
                f"{self.name} must be at most {self.upper:g}, got {value:g} (from "
                f"{self.original!r}); pass values within "
                f"[{'-inf' if self.lower is None else f'{self.lower:g}'}, {self.upper:g}]"
            )

    # ------------------------------------------------------------ sampling
    @property
    def is_fixed(self) -> bool:
        """Whether every draw gives the same values."""
        return all(_is_number(axis) for axis in self.axes)

    def is_constant(self, value: float) -> bool:
        """Whether every draw gives ``value`` along every axis (e.g. a no-op 0 or 1)."""
        return all(
            (_is_number(a) and a == value) or (isinstance(a, tuple) and a[0] == a[1] == value)
            for a in self.axes
        )

    def max_abs(self) -> float | None:
        """The largest absolute value a draw can take (``None`` for unbounded distributions)."""
        largest = 0.0
        for axis in self.axes:
            if isinstance(axis, Distribution):
                return None
            if isinstance(axis, Choice):
                low, high = axis.bounds()
            elif isinstance(axis, tuple):
                low, high = axis
            else:
                low = high = float(axis)
            largest = max(largest, abs(low), abs(high))
        return largest

    def _sample_axis(self, axis: AxisSpec, generator: torch.Generator) -> float:
        if isinstance(axis, tuple):
            low, high = axis
            if low == high:
                return low
            u = float(torch.rand((), generator=generator, dtype=torch.float64))
            return low + (high - low) * u
        if isinstance(axis, Choice):
            return axis.sample(generator)
        if isinstance(axis, Distribution):
            value = _sample_distribution(axis, generator)
            self._check_value(value)
            return value
        return float(axis)

    def sample(self, generator: torch.Generator) -> tuple[float, float, float]:
        """Three values, one per axis (a shared ``Choice``/``Distribution`` is drawn per axis)."""
        return (
            self._sample_axis(self.axes[0], generator),
            self._sample_axis(self.axes[1], generator),
            self._sample_axis(self.axes[2], generator),
        )

    def sample_1d(self, generator: torch.Generator) -> float:
        """One value (the first axis' specification), for scalar parameters."""
        return self._sample_axis(self.axes[0], generator)

    def __repr__(self) -> str:
        return repr(self.original)


def to_range(
    value: ParameterValue,
    name: str,
    *,
    nonnegative: bool = False,
    bounds: tuple[float | None, float | None] = (None, None),
) -> ParameterRange:
    """``ParameterRange(value, name, ...)``, or ``value`` itself if it already is one."""
    if isinstance(value, ParameterRange):
        return value
    return ParameterRange(value, name, nonnegative=nonnegative, bounds=bounds)


def symmetric_range(value: Any, around: float = 0.0) -> Any:
    """TorchIO 1.x's reading of a parameter: ``x`` → ``(around - x, around + x)``.

    Three numbers become three symmetric ranges (six numbers); ranges,
    choices and distributions pass through unchanged.

    Example:
        >>> from voxelflow.transforms.parameters import symmetric_range
        >>> symmetric_range(10), symmetric_range(0.1, around=1.0), symmetric_range((2, 4))
        ((-10.0, 10.0), (0.9, 1.1), (2, 4))
        >>> symmetric_range((1, 2, 3))
        (-1.0, 1.0, -2.0, 2.0, -3.0, 3.0)
    """
    if _is_number(value):
        x = abs(float(value))
        return (around - x, around + x)
    if isinstance(value, Sequence) and len(value) == 3 and all(_is_number(v) for v in value):
        out: list[float] = []
        for v in value:
            x = abs(float(v))
            out += [around - x, around + x]
        return tuple(out)
    return value
