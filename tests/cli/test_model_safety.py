"""Loading a model runs no code from the file unless ``--trust-model``.

Each doctored file carries a payload that creates a marker file. Without
``--trust-model`` the file is refused with a message naming the entry and the
option, and the marker never appears; for the payloads that torch 2.13's own
loader really executes, the same file *with* ``--trust-model`` does create the
marker, which proves each test's payload is live.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from cli_helpers import Files, assert_one_line_error, make_files, run_cli
from typer.testing import CliRunner

from voxelflow.cli import app
from voxelflow.cli._model import UnsafeModelError, check_exported_archive

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    return make_files(tmp_path_factory)


class Payload:
    """Unpickling this runs ``os.system('touch MARKER')``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., int], tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _entries(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _write(path: Path, entries: dict[str, bytes] | list[tuple[str, bytes]]) -> Path:
    items = entries.items() if isinstance(entries, dict) else entries
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in items:
            archive.writestr(name, data)
    return path


def _key(entries: dict[str, bytes], suffix: str) -> str:
    return next(name for name in entries if name.endswith(suffix))


def _shell(marker: Path) -> str:
    return f"__import__('os').system('touch {marker}')"


# Each doctor edits the entries of a clean archive; the flag says whether torch runs it.
def pickled_weight(entries: dict[str, bytes], marker: Path) -> None:
    config = _key(entries, "model_weights_config.json")
    parsed = json.loads(entries[config])
    parsed["config"]["conv.bias"]["use_pickle"] = True
    entries[config] = json.dumps(parsed).encode()
    entries[config.replace("model_weights_config.json", "weight_1")] = pickle.dumps(Payload(marker))


def pickled_sample_inputs(entries: dict[str, bytes], marker: Path) -> None:
    # torch tries weights_only=True, and on failure retries with weights_only=False.
    entries[_key(entries, "sample_inputs/model.pt")] = pickle.dumps(Payload(marker), protocol=2)


def shape_expression(entries: dict[str, bytes], marker: Path) -> None:
    name = _key(entries, "models/model.json")
    symbol = "Symbol('s77', positive=True, integer=True)"
    text = entries[name].decode()
    assert symbol in text  # the dynamic batch's symbol in this torch version
    entries[name] = text.replace(symbol, f"({_shell(marker)} and 0) or {symbol}", 1).encode()


def guard_code(entries: dict[str, bytes], marker: Path) -> None:
    name = _key(entries, "models/model.json")
    program = json.loads(entries[name])
    program["guards_code"] = [f"{_shell(marker)} == 0"]
    entries[name] = json.dumps(program).encode()


def operator_target(entries: dict[str, bytes], marker: Path) -> None:
    name = _key(entries, "models/model.json")
    program = json.loads(entries[name])
    program["graph_module"]["graph"]["nodes"].insert(
        0,
        {
            "target": "torch.os.system",
            "inputs": [{"name": "command", "arg": {"as_string": f"touch {marker}"}, "kind": 1}],
            "outputs": [],
            "metadata": {},
            "is_hop_single_tensor_return": None,
            "name": "evil",
        },
    )
    entries[name] = json.dumps(program).encode()


def argument_name(entries: dict[str, bytes], marker: Path) -> None:
    # forward_arg_names are pasted into the generated forward's source.
    name = _key(entries, "models/model.json")
    program = json.loads(entries[name])
    signature = program["graph_module"]["module_call_graph"][0]["signature"]
    signature["forward_arg_names"] = [f"x={_shell(marker)}"]
    entries[name] = json.dumps(program).encode()


def native_code(entries: dict[str, bytes], marker: Path) -> None:
    prefix = _key(entries, "archive_format").split("/")[0]
    entries[f"{prefix}/data/aotinductor/model/model.so"] = b"\x7fELF"


def legacy_pickle(entries: dict[str, bytes], marker: Path) -> None:
    prefix = _key(entries, "archive_format").split("/")[0]
    entries[f"{prefix}/data/weights/model.pt"] = pickle.dumps(Payload(marker))


DOCTORS = {
    # name: (doctor, source archive, torch 2.13 runs the payload when trusted)
    "pickled weight": (pickled_weight, "static", True),
    "pickled sample inputs": (pickled_sample_inputs, "static", True),
    "shape expression": (shape_expression, "dynamic", True),
    "guard code": (guard_code, "static", True),
    "operator target": (operator_target, "static", False),
    "argument name": (argument_name, "static", False),
    "native code": (native_code, "static", False),
    "legacy pickle": (legacy_pickle, "static", False),
}


def _infer(model: Path, files: Files, out: Path, *extra: str) -> list[str]:
    return ["infer", str(model), str(files.image), str(out), "--patch", "8", "--overlap", "2"]


@pytest.mark.parametrize("name", list(DOCTORS))
def test_doctored_exported_program_is_refused(files: Files, tmp_path: Path, name: str) -> None:
    doctor, source, live = DOCTORS[name]
    marker = tmp_path / "marker"
    entries = _entries(getattr(files, source))
    doctor(entries, marker)
    evil = _write(tmp_path / "evil.pt2", entries)
    out = tmp_path / "out.nii.gz"
    result = runner.invoke(app, [*_infer(evil, files, out), "--quiet"])
    assert result.exit_code == 1, result.output
    message = result.stderr
    assert "evil.pt2: not loaded: its entry" in message and "--trust-model" in message
    assert not marker.exists() and not out.exists()
    if live:
        trusted = runner.invoke(app, [*_infer(evil, files, out), "--quiet", "--trust-model"])
        assert marker.exists(), trusted.output  # the payload is real: trusting runs it


def test_doctored_program_refused_through_the_entry_point(files: Files, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    entries = _entries(files.static)
    pickled_weight(entries, marker)
    evil = _write(tmp_path / "evil.pt2", entries)
    result = run_cli(*_infer(evil, files, tmp_path / "out.nii.gz"), "--quiet", cwd=tmp_path)
    line = assert_one_line_error(result, "evil.pt2: not loaded: its entry")
    assert "data/weights/weight_1" in line and "pickled payload" in line and "--trust-model" in line
    assert not marker.exists()


def test_duplicate_entry_is_refused(files: Files, tmp_path: Path) -> None:
    entries = _entries(files.static)
    config = _key(entries, "model_weights_config.json")
    with pytest.warns(UserWarning, match="Duplicate name"):
        evil = _write(tmp_path / "dup.pt2", [*entries.items(), (config, entries[config])])
    with pytest.raises(UnsafeModelError, match="stored twice"):
        check_exported_archive(str(evil), evil.read_bytes())


class Wider(torch.nn.Module):
    """Buffers, constants, keyword arguments and a tuple output: still plain data."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 4, 3, padding=1)
        self.norm = torch.nn.BatchNorm3d(4)
        self.register_buffer("scale", torch.tensor(2.0))

    def forward(self, x: torch.Tensor, *, shift: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.norm(self.conv(x)) * self.scale + torch.tensor([1.0, 2.0, 3.0, 4.0]).view(
            1, 4, 1, 1, 1
        )
        y = torch.nn.functional.pad(y, (1, 1, 1, 1, 1, 1), mode="replicate")[..., 1:-1, 1:-1, 1:-1]
        b, c, i, j, k = y.shape
        pooled = y.reshape(b, c, i // 2, 2, j, k).mean(3)  # divisibility guards when dynamic
        return y + shift, pooled


@pytest.mark.parametrize("dynamic", [False, True])
def test_clean_programs_pass_the_check(files: Files, tmp_path: Path, dynamic: bool) -> None:
    example = torch.rand(2, 1, 8, 8, 8)
    shapes = None
    if dynamic:
        axes = {0: torch.export.Dim("batch", max=16)}
        axes |= {axis: torch.export.Dim.AUTO for axis in (2, 3, 4)}
        shapes = {"x": axes, "shift": None}
    program = torch.export.export(Wider().eval(), (example,), {"shift": 0.5}, dynamic_shapes=shapes)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    check_exported_archive("wider.pt2", buffer.getvalue())  # raises if refused
    for path in (files.static, files.dynamic):
        check_exported_archive(str(path), path.read_bytes())


def test_safe_and_trusted_loads_give_the_same_output(files: Files, tmp_path: Path) -> None:
    safe, trusted = tmp_path / "safe.nii.gz", tmp_path / "trusted.nii.gz"
    for out, extra in ((safe, []), (trusted, ["--trust-model"])):
        result = runner.invoke(app, [*_infer(files.dynamic, files, out), "--quiet", *extra])
        assert result.exit_code == 0, result.output
    import voxelflow as tio

    torch.testing.assert_close(tio.ScalarImage(safe).data, tio.ScalarImage(trusted).data)


@pytest.mark.parametrize("entry", ["data.pkl", "constants.pkl"])
def test_doctored_torchscript_runs_nothing(files: Files, tmp_path: Path, entry: str) -> None:
    """TorchScript's unpickler resolves only TorchScript types: os.system is refused."""
    marker = tmp_path / "marker"
    entries = _entries(files.torchscript)
    payload = pickle.dumps(Payload(marker), protocol=2)
    entries[_key(entries, "/" + entry)] = payload
    evil = _write(tmp_path / "evil.pt", entries)
    result = runner.invoke(app, [*_infer(evil, files, tmp_path / "o.nii.gz"), "--quiet"])
    assert result.exit_code == 1, result.output
    assert "evil.pt: not a loadable TorchScript model" in result.stderr
    assert not marker.exists()
    pickle.loads(payload)  # the same bytes, unpickled by Python, do run the payload
    assert marker.exists()


def test_torch_save_checkpoint_is_never_unpickled(files: Files, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"weights": torch.zeros(2), "hook": Payload(marker)}, checkpoint)
    assert not marker.exists()
    result = runner.invoke(app, [*_infer(checkpoint, files, tmp_path / "o.nii.gz"), "--quiet"])
    assert result.exit_code == 1, result.output
    assert "it is a torch.save checkpoint (pickled Python objects" in result.stderr
    assert not marker.exists()
    torch.load(checkpoint, weights_only=False)  # what a careless loader would do
    assert marker.exists()


def test_trust_model_reason_is_in_help() -> None:
    text = " ".join(runner.invoke(app, ["infer", "--help"]).output.split())
    assert "--trust-model" in text and "can run code stored in the file" in text
