"""Model files for ``voxelflow infer``: load them without running code from them, then
check, before any work, that the model takes this image's patches.

Two kinds of files are read, told apart by their contents (not their extension):

* **TorchScript** (``torch.jit.save``). ``torch.jit.load`` reads its pickles with
  TorchScript's own unpickler, which resolves only TorchScript types (a pickled
  ``os.system`` is refused: "Unknown type name"), and its code is TorchScript,
  which cannot call Python. Loaded by default.
* **Exported programs** (``torch.export.save``, ``.pt2``). ``torch.export.load``
  runs Python on several parts of the archive: payloads marked ``use_pickle``
  (``torch.load(weights_only=False)``), sample inputs that fail the safe loader
  (it retries with the unsafe one), symbolic shape expressions (``sympy.sympify``
  evaluates them), guard code (compiled into the module), and names pasted into
  the module's generated source. By default the archive is read into memory and
  every one of those parts is checked to be plain data first
  (:func:`check_exported_archive`); the checked bytes are what get loaded.
  ``--trust-model`` skips the checks.

Files saved with ``torch.save`` (pickled Python objects) are never loaded.
"""

from __future__ import annotations

import ast
import io
import json
import logging
import os
import re
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from voxelflow._errors import (
    VoxelflowFileNotFoundError,
    VoxelflowRuntimeError,
    VoxelflowValueError,
)

if TYPE_CHECKING:
    import torch

ModelKind = Literal["torchscript", "exported"]

TRUST_HINT = (
    "pass --trust-model only if you trust where the file comes from, or re-export it with "
    "torch.export.save from a model without custom objects"
)


@dataclass(frozen=True)
class Model:
    """A loaded model and what its file says about the inputs it takes.

    Attributes:
        path: the model file.
        kind: ``"torchscript"`` or ``"exported"``.
        module: the callable to run on ``(B, C, I, J, K)`` float32 batches.
        input_shape: for an exported program, the size of each input dimension,
            ``None`` where it is dynamic; ``None`` for TorchScript (any shape).
    """

    path: str
    kind: ModelKind
    module: Callable[..., Any]
    input_shape: tuple[int | None, ...] | None = None

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the program was exported with, if it is static."""
        return self.input_shape[0] if self.input_shape else None

    @property
    def fixed_channels(self) -> int | None:
        """The number of input channels, if the program fixes it."""
        return self.input_shape[1] if self.input_shape and len(self.input_shape) > 1 else None

    @property
    def fixed_patch(self) -> tuple[int, int, int] | None:
        """The spatial patch size, if the program fixes all three dimensions."""
        if not self.input_shape or len(self.input_shape) != 5:
            return None
        spatial = self.input_shape[2:]
        if any(size is None for size in spatial):
            return None
        return (int(spatial[0]), int(spatial[1]), int(spatial[2]))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Probe:
    """What one forward pass on zeros told about the model's output."""

    channels: int
    spatial_shape: tuple[int, int, int]


# ----------------------------------------------------------------------------- device
def resolve_device(name: str) -> torch.device:
    """``--device`` as a ``torch.device`` that exists on this machine, else a clear error."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise VoxelflowValueError(
            f"--device {name!r} is not a device name ({error}); use cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else "no GPU is visible"
            raise VoxelflowValueError(
                f"--device {name}: CUDA is not available on this machine (torch "
                f"{torch.__version__}: {build}); use --device cpu"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise VoxelflowValueError(
                f"--device {name}: this machine has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}; pick one of them"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise VoxelflowValueError(f"--device {name}: MPS is not available here; use --device cpu")
    return device


# ----------------------------------------------------------------------------- loading
def model_kind(path: str, data: bytes) -> ModelKind:
    """Tell a TorchScript archive from an exported program by the archive's entries."""
    not_a_model = (
        f"{path}: not a TorchScript model (torch.jit.save) or an exported program "
        "(torch.export.save, .pt2)"
    )
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise VoxelflowValueError(
            f"{not_a_model}: it is not a PyTorch archive; save the model with "
            "torch.jit.save(torch.jit.script(model), path) or torch.export.save"
        )
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        relative = {name.split("/", 1)[-1] for name in archive.namelist()}
    if "archive_format" in relative or any(name.startswith("models/") for name in relative):
        return "exported"
    if "constants.pkl" in relative and any(name.startswith("code/") for name in relative):
        return "torchscript"
    if "data.pkl" in relative:
        raise VoxelflowValueError(
            f"{not_a_model}: it is a torch.save checkpoint (pickled Python objects, which run "
            "code when loaded); voxelflow does not load those. Save the model with "
            "torch.jit.save(torch.jit.script(model), path) or torch.export.save"
        )
    raise VoxelflowValueError(f"{not_a_model}: the archive holds neither")


def load_model(path: str, device: torch.device, *, trust: bool = False) -> Model:
    """Load a TorchScript model or an exported program onto ``device``, safely unless ``trust``.

    Args:
        path: the model file.
        device: where the model runs.
        trust: load an exported program without checking it for code first.

    Raises:
        VoxelflowFileNotFoundError: no such file.
        VoxelflowValueError: not a model file, or a part of it could run code
            (the message names the entry and ``--trust-model``).
    """
    import torch

    if not os.path.isfile(path):
        what = "is a directory, not a model file" if os.path.isdir(path) else "no such model file"
        raise VoxelflowFileNotFoundError(f"{path}: {what}; check the path")
    with open(path, "rb") as stream:
        data = stream.read()  # checked and loaded from the same bytes
    kind = model_kind(path, data)
    if kind == "torchscript":
        try:
            module = torch.jit.load(io.BytesIO(data), map_location=device)
        except Exception as error:
            raise VoxelflowValueError(
                f"{path}: not a loadable TorchScript model ({cause(error)}); re-save it with "
                "torch.jit.save(torch.jit.script(model), path) from this version of torch"
            ) from error
        module.eval()
        return Model(path, kind, module)
    if not trust:
        check_exported_archive(path, data)
    try:
        with _quiet_torch_export():
            program = torch.export.load(io.BytesIO(data))
        module = program.module().to(device)
    except Exception as error:
        raise VoxelflowValueError(
            f"{path}: not a loadable exported program ({cause(error)}); re-export it with "
            "torch.export.save from this version of torch "
            f"({torch.__version__})"
        ) from error
    return Model(path, kind, module, _user_input_shape(program))


@contextmanager
def _quiet_torch_export() -> Iterator[None]:
    """``torch.export.load`` logs a traceback before raising; the error says it all."""
    logger = logging.getLogger("torch.export")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _user_input_shape(program: Any) -> tuple[int | None, ...] | None:
    """The first user input's size per dimension (``None`` where dynamic)."""
    names = list(program.graph_signature.user_inputs)
    if not names:
        return None
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name == names[0]:
            value = node.meta.get("val")
            shape = getattr(value, "shape", None)
            if shape is None:
                return None
            return tuple(size if isinstance(size, int) else None for size in shape)
    return None


# ----------------------------------------------------------------------------- safety
_META_ENTRIES = {"archive_format", "archive_version", "byteorder", "version"}
_CONFIG = re.compile(r"data/(weights|constants)/[\w.-]+_config\.json\Z")
_RAW_PAYLOAD = re.compile(r"(weight|tensor)_\d+\Z")
#: Strings that are only data (op arguments, printed metadata): never executed.
_FREE_TEXT = {
    "as_string",
    "as_strings",
    "stack_trace",
    "nn_module_stack",
    "source_fn_stack",
    "torch_fn",
    "custom",
    "from_node",
}
_TOKEN = re.compile(r"[A-Za-z0-9_.:+\-]*\Z")
_OP_TARGET = re.compile(r"torch\.ops\.[A-Za-z_]\w*\.[A-Za-z_]\w*(\.[A-Za-z_]\w*)?\Z")
_SYM_TARGETS = {
    "torch.sym_float", "torch.sym_int", "torch.sym_ite", "torch.sym_max", "torch.sym_min",
    "torch.sym_not", "torch.sym_sum", "torch._sym_sqrt",
}  # fmt: skip
_OPERATORS = {
    "abs", "add", "and_", "eq", "floordiv", "ge", "getitem", "gt", "invert", "le", "lshift",
    "lt", "mod", "mul", "ne", "neg", "not_", "or_", "pos", "pow", "rshift", "sub", "truediv",
    "trunc", "xor",
}  # fmt: skip
_MATH = {"ceil", "floor", "trunc", "sqrt", "log2"}
#: sympy constructors a serialized shape expression may call (``srepr`` output).
_SYMPY_CALLS = {
    "Abs", "Add", "And", "CeilDiv", "CeilToInt", "CleanDiv", "Eq", "Equality", "Float",
    "FloatPow", "FloatTrueDiv", "FloorDiv", "FloorToInt", "GreaterThan", "Identity",
    "IntTrueDiv", "Integer", "IsNonOverlappingAndDenseIndicator", "LShift", "LessThan", "Max",
    "Min", "Mod", "ModularIndexing", "Mul", "Ne", "Not", "Or", "Pow", "PowByNatural",
    "PythonMod", "RShift", "Rational", "RoundDecimal", "RoundToInt", "StrictGreaterThan",
    "StrictLessThan", "Symbol", "ToFloat", "TruncToFloat", "TruncToInt", "Unequality", "Where",
    "ceiling", "floor",
}  # fmt: skip
_SYMPY_NAMES = {"oo", "zoo", "nan", "true", "false", "int_oo", "S"}
_SYMPY_STRING_ARG = {"Symbol": re.compile(r"[A-Za-z]\w*\Z"), "Float": re.compile(r"[\d.eE+-]+\Z")}
_GUARD_NAMES = {"L", "IsNonOverlappingAndDenseIndicator", "cast_symbool_to_symint_guardless"}
_GUARD_METHODS = {"size", "stride", "storage_offset", "dim", "numel"}
_GUARD_MODULES = {"math": _MATH, "torch": {t.split(".", 1)[1] for t in _SYM_TARGETS}}


class UnsafeModelError(VoxelflowValueError):
    """A model file holds a part that could run code when loaded."""


def check_exported_archive(path: str, data: bytes) -> None:
    """Refuse an exported program (``.pt2``) that holds anything loading could execute.

    Allowed: the archive's version entries, the program's JSON (whose shape
    expressions, guards, operator targets and names must all be plain data),
    raw tensor payloads listed in the weights/constants configs, sample inputs
    that PyTorch's safe loader (``weights_only=True``) reads, and ``extra/``
    text files. Anything else (pickled payloads, custom or opaque objects,
    AOTInductor native code, legacy pickles, unknown entries) is refused.

    Raises:
        UnsafeModelError: naming the entry (and the field of the JSON), why it
            is refused, and ``--trust-model``.
    """
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        if len(set(names)) != len(names):
            duplicate = next(name for name in names if names.count(name) > 1)
            _refuse(path, duplicate, "stored twice (which copy is loaded depends on the reader)")
        prefixes = {name.split("/", 1)[0] for name in names}
        if len(prefixes) != 1 or any("/" not in name for name in names):
            _refuse(path, names[0], "outside the archive's single top folder")
        relative = {name: name.split("/", 1)[1] for name in names}
        referenced: set[str] = set()
        for name, rel in relative.items():
            match = _CONFIG.match(rel)
            if match:
                folder = f"data/{match.group(1)}/"
                folder = name[: len(name) - len(rel)] + folder
                referenced |= _check_payload_config(path, name, archive.read(name), folder)
        for name, rel in relative.items():
            if rel in _META_ENTRIES or rel.startswith(".data/") or _CONFIG.match(rel):
                continue
            if name in referenced or rel.startswith("extra/"):
                continue
            if rel.startswith("models/") and rel.endswith(".json"):
                _check_program(path, name, archive.read(name))
            elif rel.startswith("data/sample_inputs/") and rel.endswith(".pt"):
                _check_sample_inputs(path, name, archive.read(name))
            elif rel.startswith("data/aotinductor/"):
                _refuse(path, name, "compiled native code (AOTInductor), which loading runs")
            else:
                _refuse(path, name, "not a part voxelflow can check (a legacy pickle or unknown)")


def _refuse(path: str, entry: str, why: str, where: str = "") -> None:
    field = f" at {where}" if where else ""
    raise UnsafeModelError(
        f"{path}: not loaded: its entry {entry!r}{field} is {why}; loading it could run code "
        f"from the file. {TRUST_HINT[0].upper()}{TRUST_HINT[1:]}"
    )


def _check_payload_config(path: str, entry: str, raw: bytes, folder: str) -> set[str]:
    """A weights/constants config: every payload must be raw tensor bytes; their entries."""
    try:
        config = json.loads(raw)["config"]
    except (ValueError, KeyError, TypeError):
        _refuse(path, entry, "not the JSON payload config torch.export.save writes")
    referenced = set()
    for name, meta in config.items():
        if not _TOKEN.match(name):
            _refuse(path, entry, f"naming a tensor {name!r} (names reach generated code)")
        payload = str(meta.get("path_name", ""))
        if meta.get("use_pickle") or not _RAW_PAYLOAD.match(payload):
            _refuse(
                path, f"{folder}{payload}", f"a pickled payload for {name!r} (unpickled on load)"
            )
        referenced.add(f"{folder}{payload}")
    return referenced


def _check_sample_inputs(path: str, entry: str, raw: bytes) -> None:
    """Sample inputs are a ``torch.save`` pickle: torch retries unsafely if the safe load fails."""
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.load(io.BytesIO(raw), weights_only=True)
    except Exception as error:
        text = str(error)
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
        what = (
            f"it calls {found.group(1)}"
            if found
            else (detail.group(1).strip() if detail else cause(error)[:120])
        )
        _refuse(path, entry, f"a pickle PyTorch's safe loader refuses ({what})")


def _check_program(path: str, entry: str, raw: bytes) -> None:
    """Every string of the program's JSON must be data where the loader could execute it."""
    try:
        program = json.loads(raw)
    except ValueError:
        _refuse(path, entry, "not valid JSON")
    for where, key, value in _strings(program, "$"):
        problem = _string_problem(key, value)
        if problem:
            _refuse(path, entry, problem, where)


def _strings(node: Any, where: str, key: str = "") -> Iterator[tuple[str, str, str]]:
    """(location, key, string) for every string and dict key outside free-text fields."""
    if key in _FREE_TEXT:
        return
    if isinstance(node, dict):
        for name, value in node.items():
            yield f"{where}.{name}", "<key>", str(name)
            yield from _strings(value, f"{where}.{name}", str(name))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _strings(value, f"{where}[{index}]", key)
    elif isinstance(node, str):
        if key in ("in_spec", "out_spec", "context") and node[:1] in "[{":
            try:
                parsed = json.loads(node)
            except ValueError:
                yield where, key, node
            else:
                yield from _strings(parsed, where, key + "-json")
        else:
            yield where, key, node


def _string_problem(key: str, value: str) -> str:
    """Why ``value`` (under ``key``) is not plain data, or ``""``."""
    if key == "expr_str":
        return "" if _is_sympy_data(value) else f"a shape expression sympify would run: {value!r}"
    if key == "guards_code":
        return "" if _is_guard(value) else f"guard code that would run: {value!r}"
    if key == "target":
        return "" if _is_target(value) else f"an operator outside torch.ops: {value!r}"
    if not _TOKEN.match(value):
        return f"a name with characters that reach generated code: {value[:80]!r}"
    return ""


def _is_target(value: str) -> bool:
    if _OP_TARGET.match(value) and "__" not in value:
        return True
    module, _, name = value.partition(".")
    return (
        value in _SYM_TARGETS
        or (module == "_operator" and name in _OPERATORS)
        or (module == "math" and name in _MATH)
    )


def _is_sympy_data(text: str) -> bool:
    """``srepr`` output: nested calls of sympy constructors on literals, nothing else."""
    try:
        tree = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError):
        return False

    def ok(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return isinstance(node.value, int | float | bool)  # strings only where checked
        if isinstance(node, ast.Name):
            return node.id in _SYMPY_NAMES
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return ok(node.operand)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            name = node.func.id
            if name not in _SYMPY_CALLS:
                return False
            args = list(node.args)
            pattern = _SYMPY_STRING_ARG.get(name)
            if pattern and args and isinstance(args[0], ast.Constant):
                first = args.pop(0).value  # type: ignore[attr-defined]
                if not (isinstance(first, str) and pattern.match(first)):
                    return False
            keywords_ok = all(
                keyword.arg is not None
                and isinstance(keyword.value, ast.Constant)
                and isinstance(keyword.value.value, bool | int)
                for keyword in node.keywords
            )
            return keywords_ok and all(ok(arg) for arg in args)
        return False

    return ok(tree)


def _is_guard(text: str) -> bool:
    """Arithmetic and comparisons on ``L['x'].size()[n]`` and friends, nothing else."""
    try:
        tree = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError):
        return False

    def ok(node: ast.AST) -> bool:
        match node:
            case ast.Constant(value=value):
                return isinstance(value, int | float | bool | str) and "__" not in str(value)
            case ast.Name(id=name):
                return name in _GUARD_NAMES
            case ast.Compare(left=left, comparators=rest):
                return ok(left) and all(ok(item) for item in rest)
            case ast.BoolOp(values=values):
                return all(ok(item) for item in values)
            case ast.BinOp(left=left, right=right):
                return ok(left) and ok(right)
            case ast.UnaryOp(operand=operand):
                return ok(operand)
            case ast.Subscript(value=value, slice=index):
                return ok(value) and ok(index)
            case ast.Attribute(value=ast.Name(id=module), attr=attr) if module in _GUARD_MODULES:
                return attr in _GUARD_MODULES[module]
            case ast.Attribute(value=value, attr=attr):
                return attr in _GUARD_METHODS and ok(value)
            case ast.Call(func=func, args=args, keywords=[]):
                return ok(func) and all(ok(arg) for arg in args)
        return False

    return ok(tree)


# ----------------------------------------------------------------------------- fit
def cause(error: BaseException) -> str:
    """The line of an error that says what went wrong (TorchScript's is its last)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if lines[0].startswith("The following operation failed in the TorchScript interpreter"):
        return lines[-1]
    return f"{type(error).__name__}: {lines[0]}" if ":" not in lines[0][:40] else lines[0]


_CHANNELS = re.compile(r"expected input\[[^\]]*\] to have (\d+) channels, but got (\d+)")


def check_fits(
    model: Model, *, image: str, channels: int, patch: tuple[int, int, int], batch: int
) -> None:
    """Compare an exported program's fixed input shape with what this run will feed it."""
    if model.input_shape is None:
        return
    if len(model.input_shape) != 5:
        raise VoxelflowValueError(
            f"{model.path}: the exported program takes a {len(model.input_shape)}-D input; "
            "voxelflow infer feeds 5-D batches (B, C, I, J, K); export the model on such a batch"
        )
    if model.fixed_channels is not None and model.fixed_channels != channels:
        raise _channel_error(model.path, model.fixed_channels, image, channels)
    wanted = (batch, channels, *patch)
    fixed = model.input_shape
    if all(size is None or size == want for size, want in zip(fixed, wanted, strict=True)):
        return
    shown = "(" + ", ".join("dynamic" if s is None else str(s) for s in fixed) + ")"
    fixes = []
    if fixed[0] is not None and fixed[0] != batch:
        fixes.append(f"--batch {fixed[0]}")
    if model.fixed_patch is not None and model.fixed_patch != patch:
        side = model.fixed_patch
        fixes.append(f"--patch {side[0]}" if len(set(side)) == 1 else f"a {side} patch")
    elif any(s is not None and s != w for s, w in zip(fixed[2:], patch, strict=True)):
        fixes.append("a --patch its fixed spatial sizes allow")
    raise VoxelflowValueError(
        f"{model.path}: the exported program has a fixed input shape {shown} (B, C, I, J, K); "
        f"this run feeds batches of {tuple(wanted)}. Export it with dynamic shapes "
        "(torch.export.export(model, (x,), dynamic_shapes=...)) or pass " + " and ".join(fixes)
    )


def _channel_error(path: str, expected: int, image: str, got: int) -> VoxelflowValueError:
    return VoxelflowValueError(
        f"{path}: the model takes {expected} input channel(s) but {image} has {got}; "
        f"pass an image with {expected} channel(s), or a model trained on {got}"
    )


def probe(
    model: Model,
    *,
    image: str,
    channels: int,
    patch: tuple[int, int, int],
    batch: int,
    device: torch.device,
) -> Probe:
    """One forward pass on a batch of zeros shaped like the run's, before any work.

    A failure becomes a message naming the cause (input channels, patch size)
    and the fix; success tells the output's channels and spatial size.
    """
    import torch

    check_fits(model, image=image, channels=channels, patch=patch, batch=batch)
    size = model.fixed_batch or 1
    zeros = torch.zeros((size, channels, *patch), dtype=torch.float32, device=device)
    try:
        with torch.inference_mode():
            output = model.module(zeros)
    except Exception as error:
        text = str(error)
        found = _CHANNELS.search(text)
        if found:
            raise _channel_error(
                model.path, int(found.group(1)), image, int(found.group(2))
            ) from None
        raise VoxelflowValueError(
            f"{model.path}: the model fails on a batch of zeros shaped like this run's "
            f"{tuple(zeros.shape)} (B, C, I, J, K), before any work: {cause(error)}. Check that "
            f"it takes {channels}-channel input and a --patch of {patch[0]} (e.g. a multiple of "
            "its downsampling factor)"
        ) from None
    if isinstance(output, tuple | list) and output:
        output = output[0]
    if not isinstance(output, torch.Tensor) or output.ndim != 5 or output.shape[0] != size:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise VoxelflowValueError(
            f"{model.path}: the model returns {shape} for a batch of {tuple(zeros.shape)}; "
            "voxelflow infer needs a (B, C, I, J, K) tensor per batch"
        )
    spatial = (int(output.shape[2]), int(output.shape[3]), int(output.shape[4]))
    return Probe(int(output.shape[1]), spatial)


def run_batch(model: Model, inputs: torch.Tensor) -> torch.Tensor:
    """The model's output for one batch; a short last batch is padded for a fixed-batch program."""
    import torch

    count = int(inputs.shape[0])
    fixed = model.fixed_batch
    if fixed is not None and count < fixed:
        padding = inputs.new_zeros((fixed - count, *inputs.shape[1:]))
        inputs = torch.cat([inputs, padding])
    try:
        outputs = model.module(inputs)
    except Exception as error:
        raise VoxelflowRuntimeError(
            f"{model.path}: the model failed on a batch of shape {tuple(inputs.shape)}: "
            f"{cause(error)}"
        ) from error
    if isinstance(outputs, tuple | list):
        outputs = outputs[0]
    return outputs[:count]
