"""The patch pipeline: locations, samplers, the queue, and the aggregator."""

from voxelflow.patches.aggregator import PatchAggregator
from voxelflow.patches.grid import GridSampler
from voxelflow.patches.location import PatchLocation
from voxelflow.patches.queue import Queue
from voxelflow.patches.sampler import PatchSampler, extract_patch, read_patch
from voxelflow.patches.samplers import LabelSampler, UniformSampler, WeightedSampler

__all__ = [
    "GridSampler",
    "LabelSampler",
    "PatchAggregator",
    "PatchLocation",
    "PatchSampler",
    "Queue",
    "UniformSampler",
    "WeightedSampler",
    "extract_patch",
    "read_patch",
]
