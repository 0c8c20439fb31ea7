"""The patch pipeline: locations, samplers, the queue, and the aggregator."""

from voxelflow.patches.aggregator import PatchAggregator
from voxelflow.patches.grid import GridSampler
from voxelflow.patches.location import PatchLocation
from voxelflow.patches.sampler import PatchSampler, extract_patch, read_patch

__all__ = [
    "GridSampler",
    "PatchAggregator",
    "PatchLocation",
    "PatchSampler",
    "extract_patch",
    "read_patch",
]
