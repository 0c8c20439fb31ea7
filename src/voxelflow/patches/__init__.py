"""The patch pipeline: locations, samplers, the queue, and the aggregator."""

from voxelflow.patches.aggregator import PatchAggregator
from voxelflow.patches.base import PatchSampler
from voxelflow.patches.grid import GridSampler
from voxelflow.patches.label import LabelSampler
from voxelflow.patches.location import PatchLocation
from voxelflow.patches.queue import Queue
from voxelflow.patches.random_sampling import UniformSampler
from voxelflow.patches.reading import extract_patch, read_patch
from voxelflow.patches.weighted import WeightedSampler

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
