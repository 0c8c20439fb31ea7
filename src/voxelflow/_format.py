"""Human-readable numbers for messages and reprs."""

from __future__ import annotations


def pretty_bytes(n: int) -> str:
    """``16384`` → ``'16.0 KiB'`` (binary units, one decimal; whole bytes below 1 KiB).

    Example:
        >>> from voxelflow._format import pretty_bytes
        >>> pretty_bytes(512), pretty_bytes(16384), pretty_bytes(3 * 2**30)
        ('512 B', '16.0 KiB', '3.0 GiB')
    """
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
