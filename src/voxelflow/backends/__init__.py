"""Storage backends: the extension namespace for new formats.

Users import from :mod:`voxelflow`; people who add a format import from here:
the :class:`BackendProtocol` contract, the :class:`Backend` base class, the
registries, the NIfTI-Zarr writer and the typed source writers read from.
Built-in backends are registered when this package is imported.

One module per job: ``base`` (the contract), ``segments`` (which byte runs
hold a box), ``region_view`` (a lazy region of another backend), ``memory``
(tensors, array-likes), ``nifti_header`` / ``nifti`` / ``nifti_gz`` /
``nifti_write`` (NIfTI), ``gzindex`` (gzip decoding and seek-point indexes),
``niftizarr_meta`` / ``niftizarr_store`` / ``niftizarr`` / ``niftizarr_write``
(NIfTI-Zarr), ``remote`` (NIfTI over fsspec), ``_fsspec`` (remote storage
shared by both), ``sitk`` (everything else), ``write_source`` (what writers
read), ``registry`` (discovery).
"""

from voxelflow.backends.base import (
    REGION_COSTS,
    Backend,
    BackendProtocol,
    RegionCost,
    apply_scaling,
    is_scaled,
    scaled_dtype,
    storable,
    store_into,
    torch_dtype,
)
from voxelflow.backends.memory import ArrayLikeBackend, TensorBackend, as_4d_tensor
from voxelflow.backends.nifti import NiftiBackend, is_nifti_path
from voxelflow.backends.nifti_gz import NiftiGzBackend, is_nifti_gz_path
from voxelflow.backends.nifti_header import NiftiHeader
from voxelflow.backends.nifti_write import is_nifti_output, write_nifti
from voxelflow.backends.niftizarr import (
    NiftiZarrBackend,
    is_niftizarr_output,
    is_niftizarr_source,
)
from voxelflow.backends.niftizarr_write import NiftiZarrWriter, save_niftizarr
from voxelflow.backends.region_view import RegionBackend, WindowBackend
from voxelflow.backends.registry import (
    Registration,
    backends,
    find_writer,
    is_image,
    open_backend,
    register_backend,
    register_writer,
    unregister_backend,
    unregister_writer,
    writers,
)
from voxelflow.backends.remote import (
    RemoteNiftiBackend,
    RemoteNiftiGzBackend,
    is_remote_nifti,
    is_remote_nifti_gz,
)
from voxelflow.backends.sitk import SimpleITKBackend, is_sitk_source, write_sitk
from voxelflow.backends.write_source import WriteSource, source_of

register_backend("nifti", is_nifti_path, NiftiBackend, priority=20)
register_backend("nifti-gz", is_nifti_gz_path, NiftiGzBackend, priority=20)
register_backend("nifti-zarr", is_niftizarr_source, NiftiZarrBackend, priority=30)
register_backend("nifti-remote", is_remote_nifti, RemoteNiftiBackend, priority=25)
register_backend("nifti-gz-remote", is_remote_nifti_gz, RemoteNiftiGzBackend, priority=25)
register_backend("simpleitk", is_sitk_source, SimpleITKBackend, priority=-100)
register_writer("nifti", is_nifti_output, write_nifti, priority=20)
register_writer("nifti-zarr", is_niftizarr_output, save_niftizarr, priority=30)
register_writer("simpleitk", is_sitk_source, write_sitk, priority=-100)

__all__ = [
    "REGION_COSTS",
    "ArrayLikeBackend",
    "Backend",
    "BackendProtocol",
    "NiftiBackend",
    "NiftiGzBackend",
    "NiftiHeader",
    "NiftiZarrBackend",
    "NiftiZarrWriter",
    "RegionBackend",
    "RegionCost",
    "Registration",
    "RemoteNiftiBackend",
    "RemoteNiftiGzBackend",
    "SimpleITKBackend",
    "TensorBackend",
    "WindowBackend",
    "WriteSource",
    "apply_scaling",
    "as_4d_tensor",
    "backends",
    "find_writer",
    "is_image",
    "is_scaled",
    "open_backend",
    "register_backend",
    "register_writer",
    "scaled_dtype",
    "source_of",
    "storable",
    "store_into",
    "torch_dtype",
    "unregister_backend",
    "unregister_writer",
    "writers",
]
