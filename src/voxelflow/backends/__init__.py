"""Storage backends: the extension namespace for new formats.

Users import from :mod:`voxelflow`; people who add a format import from here:
the :class:`BackendProtocol` contract, the :class:`Backend` base class, and the
registries. Built-in backends are registered when this package is imported.
"""

from voxelflow.backends.base import (
    Backend,
    BackendProtocol,
    apply_scaling,
    is_scaled,
    scaled_dtype,
    torch_dtype,
)
from voxelflow.backends.memory import ArrayLikeBackend, TensorBackend, as_4d_tensor
from voxelflow.backends.nifti import (
    NiftiBackend,
    NiftiGzBackend,
    NiftiHeader,
    is_nifti_gz_path,
    is_nifti_output,
    is_nifti_path,
    write_nifti,
)
from voxelflow.backends.niftizarr import (
    NiftiZarrBackend,
    is_niftizarr_output,
    is_niftizarr_source,
)
from voxelflow.backends.niftizarr_write import save_niftizarr
from voxelflow.backends.registry import (
    Registration,
    backends,
    find_writer,
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
from voxelflow.backends.window import WindowBackend

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
    "ArrayLikeBackend",
    "Backend",
    "BackendProtocol",
    "NiftiBackend",
    "NiftiGzBackend",
    "NiftiHeader",
    "NiftiZarrBackend",
    "Registration",
    "RemoteNiftiBackend",
    "RemoteNiftiGzBackend",
    "SimpleITKBackend",
    "TensorBackend",
    "WindowBackend",
    "apply_scaling",
    "as_4d_tensor",
    "backends",
    "find_writer",
    "is_scaled",
    "open_backend",
    "register_backend",
    "register_writer",
    "scaled_dtype",
    "torch_dtype",
    "unregister_backend",
    "unregister_writer",
    "writers",
]
