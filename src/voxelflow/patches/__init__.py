"""The patch pipeline: locations, samplers, the queue, and the aggregator."""

from voxelflow.patches.location import PatchLocation

__all__ = ["PatchLocation"]
