"""The patch pipeline: locations, samplers, the queue, and the aggregator.

Modules, in the order data flows through them:

* ``location``: :class:`PatchLocation`, where a patch lies;
* ``reading``: reading patches through the backend contract (one allocation,
  one read), private copies of subjects;
* ``base``, ``random_sampling``, ``weighted``, ``label``, ``grid``: where
  patches go (``tables``: the coarse sampling tables of the weighted and
  label samplers);
* ``queue``: the bounded, reproducible stream of training patches;
* ``placement``, ``blending``, ``accumulators``, ``slabs``, ``aggregator``:
  where each output patch goes, its blend window, the sums in memory or in
  slabs on their way to memory or a ``.nii.zarr``, and
  :class:`PatchAggregator`, which ties them together.
"""

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
