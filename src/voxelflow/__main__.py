"""``python -m voxelflow``: the same command line as the ``voxelflow`` script.

``torchrun -m voxelflow ...`` needs it too.
"""

from voxelflow.cli import main

if __name__ == "__main__":
    main()
