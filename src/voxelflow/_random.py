"""Seeds and generators: the one place randomness is created.

Every random choice in voxelflow takes an explicit ``torch.Generator``. When a
user passes no seed, one is drawn from torch's global generator, so
``torch.manual_seed(n)`` makes a whole program reproducible; derived seeds mix
their parts with NumPy's ``SeedSequence`` so that streams never collide.
"""

from __future__ import annotations

import numpy as np
import torch

SEED_BITS = 62


def fresh_seed(seed: int | None = None) -> int:
    """``seed`` as an int, or a new one drawn from torch's global generator.

    Example:
        >>> import torch
        >>> from voxelflow._random import fresh_seed
        >>> _ = torch.manual_seed(0); a = fresh_seed()
        >>> _ = torch.manual_seed(0); a == fresh_seed(), fresh_seed(7)
        (True, 7)
    """
    if seed is not None:
        return int(seed)
    return int(torch.randint(0, 2**SEED_BITS, ()).item())


def seed_from(generator: torch.Generator) -> int:
    """A new seed drawn from ``generator`` (to seed a generator on another device)."""
    return int(torch.randint(0, 2**SEED_BITS, (), generator=generator).item())


def derive_seed(*parts: int) -> int:
    """A seed that depends on every one of ``parts`` (e.g. queue seed, epoch, subject).

    Example:
        >>> from voxelflow._random import derive_seed
        >>> derive_seed(1, 2) == derive_seed(1, 2), derive_seed(1, 2) == derive_seed(2, 1)
        (True, False)
    """
    state = np.random.SeedSequence([int(p) % 2**63 for p in parts]).generate_state(1, np.uint64)
    return int(state[0] >> 1)


def make_generator(seed: int, device: torch.device | str | None = None) -> torch.Generator:
    """A ``torch.Generator`` (on ``device``, default CPU) seeded with ``seed``."""
    generator = torch.Generator() if device is None else torch.Generator(device=device)
    return generator.manual_seed(int(seed))
