"""The patch pipeline: locations, samplers, the queue, and the aggregator."""

from voxelflow.patches.location import PatchLocation
from voxelflow.patches.sampler import PatchSampler, extract_patch, read_patch

__all__ = ["PatchLocation", "PatchSampler", "extract_patch", "read_patch"]
