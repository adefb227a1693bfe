"""Hostile input across the commands: what a careful user, or an attacker, would try.

Every refused case asserts the same contract (:func:`refused`):

* exit 2 and exactly one stderr line, starting with ``error:``, with no traceback;
* every input byte-identical afterwards;
* nothing new in any folder involved (no output, no temporary file).

Signals (SIGINT, SIGTERM) are sent by the child process to itself at a chosen moment, so the
tests do not depend on timing: exit 130 or 143, nothing left behind, or, when the signal lands
while the outputs are being moved in place, every output whole. Models that are written pass
the full checker and run.

Environment failures use real file systems where this machine allows it (a full or read-only
tmpfs, a folder the user cannot write, in a user namespace made with ``unshare``), and are
simulated with the same ``OSError`` otherwise.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from clirun import cli, ok

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "models" / "digits" / "resnet8_digits.onnx"
DIGITS_DATA = REPO / "models" / "digits" / "digits_test.npz"


# ---------------------------------------------------------------- helpers
def tree(*folders: Path) -> dict[str, str]:
    """Every file under ``folders`` (recursively, hidden ones too) → its sha256."""
    files = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file() and not path.is_symlink():
                files[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
            elif path.is_symlink():
                files[str(path)] = "link:" + os.readlink(path)
    return files


def refused(result, before: dict, *folders: Path, needles=()) -> str:
    """The contract of a refused command (see the module doc); returns the message."""
    detail = f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.exit_code == 2, detail
    assert "Traceback" not in result.stdout + result.stderr, detail
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), detail
    for needle in needles:
        assert needle.lower() in lines[0].lower(), f"{needle!r} not in {lines[0]!r}"
    assert tree(*folders) == before, "a file was added, changed or removed"
    return lines[0]


def runs(path: Path, shape=(2, 1, 32, 32)) -> None:
    """The model passes the full checker and runs in onnxruntime."""
    onnx.checker.check_model(str(path), full_check=True)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    session.run(None, feed)


def conv_model(path: Path, dims=("N", 3, 8, 8), wtype=TensorProto.FLOAT, opset: int = 17, elem=TensorProto.FLOAT) -> Path:
    """x → Conv(3→8) → Relu → Conv(8→4) → y, with the first weight of type ``wtype``."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    if wtype == TensorProto.FLOAT:
        first = numpy_helper.from_array(w1, "w1")
    elif wtype == TensorProto.STRING:
        first = helper.make_tensor("w1", TensorProto.STRING, [8, 3, 3, 3], [b"w"] * 216)
    elif wtype == TensorProto.INT64:
        first = numpy_helper.from_array(w1.astype(np.int64), "w1")
    else:
        first = helper.make_tensor("w1", wtype, list(w1.shape), w1.flatten().tolist())
    w2 = rng.standard_normal((4, 8, 1, 1)).astype(np.float32)
    second = numpy_helper.from_array(w2.astype(np.int64) if elem == TensorProto.INT64 else w2, "w2")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
             helper.make_node("Conv", ["r1", "w2"], ["y"], name="conv2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", elem, list(dims))],
                              [helper.make_tensor_value_info("y", elem, [dims[0], 4, None, None])], [first, second])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("template")
    shutil.copy(DIGITS, folder / "m.onnx")
    shutil.copy(DIGITS_DATA, folder / "d.npz")
    ok(cli("prune", folder / "m.onnx", "-o", folder / "p.onnx", "--ratio", "0.5", "--plan", folder / "plan.json"))
    return folder


@pytest.fixture
def work(template, tmp_path) -> Path:
    """A folder of its own with the digits model ``m.onnx``, its data ``d.npz``, a pruned model
    ``p.onnx`` and its plan ``plan.json``."""
    for path in template.iterdir():
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


@pytest.fixture(scope="module")
def external(tmp_path_factory) -> Path:
    """``e.onnx`` with its weights in ``e.onnx.data``."""
    folder = tmp_path_factory.mktemp("external")
    model = onnx.load(str(DIGITS))
    onnx.save(model, str(folder / "e.onnx"), save_as_external_data=True, location="e.onnx.data", size_threshold=0)
    return folder / "e.onnx"


# ================================================================ 1. outputs that alias inputs
def spell(path: Path, how: str, work: Path) -> str:
    """Another name for ``path``: the same string, ``./``, ``..``, absolute, a symlink, a hard link."""
    if how == "same":
        return str(path)
    if how == "dot":
        return str(path.parent / "." / path.name)
    if how == "dotdot":
        (work / "sub").mkdir(exist_ok=True)
        return str(work / "sub" / ".." / path.name)
    if how == "absolute":
        return str(path.resolve())
    if how == "symlink":
        link = work / f"link-{path.name}"
        link.symlink_to(path)
        return str(link)
    if how == "hardlink":
        link = work / f"hard-{path.name}"
        os.link(path, link)
        return str(link)
    raise ValueError(how)


SPELLINGS = ["same", "dot", "dotdot", "absolute", "symlink", "hardlink"]


@pytest.mark.parametrize("how", SPELLINGS)
@pytest.mark.parametrize("flag", ["--json", "--plan", "-o"])
def test_prune_output_aliases_the_model(flag, how, work):
    alias = spell(work / "m.onnx", how, work)
    args = {"-o": ["-o", alias], "--json": ["-o", work / "out.onnx", "--json", alias],
            "--plan": ["-o", work / "out.onnx", "--plan", alias]}[flag]
    before = tree(work)
    refused(cli("prune", work / "m.onnx", "--ratio", "0.5", *args), before, work,
            needles=["refusing to overwrite the input model", flag])


@pytest.mark.parametrize("how", SPELLINGS)
def test_prune_output_aliases_the_plan_it_applies(how, work):
    alias = spell(work / "plan.json", how, work)
    before = tree(work)
    refused(cli("prune", work / "m.onnx", "-o", alias, "--plan", work / "plan.json"),
            before, work, needles=["refusing to overwrite the plan"])


@pytest.mark.parametrize("first, second", [("-o", "--json"), ("-o", "--plan"), ("--plan", "--json")])
def test_prune_two_outputs_name_one_file(first, second, work):
    args = {"-o": work / "out.onnx", "--json": work / "s.json", "--plan": work / "new-plan.json"}
    args[second] = spell(args[first], "dot", work)
    before = tree(work)
    flat = [str(a) for k, v in args.items() for a in (k, v)]
    refused(cli("prune", work / "m.onnx", "--ratio", "0.5", *flat), before, work, needles=["name the same file"])


@pytest.mark.parametrize("how", ["same", "symlink", "hardlink"])
@pytest.mark.parametrize("read, flag", [("d.npz", "--json"), ("d.npz", "-o"), ("sens.json", "--plan"),
                                        ("sens.json", "-o")])
def test_prune_output_aliases_calibration_data_or_curves(read, flag, how, work):
    """The calibration .npz and a reused sensitivity report are inputs too."""
    (work / "sens.json").write_text("{}")
    alias = spell(work / read, how, work)
    args = {"-o": ["-o", alias], "--json": ["-o", work / "out.onnx", "--json", alias],
            "--plan": ["-o", work / "out.onnx", "--plan", alias]}[flag]
    before = tree(work)
    refused(cli("prune", work / "m.onnx", "--target-macs", "0.6", "--schedule", "sensitivity", "--sensitivity-from",
                work / "sens.json", "--recover", "reconstruct", "--data", work / "d.npz", *args), before, work,
            needles=["refusing to overwrite the", flag])


def test_analyze_sensitivity_outputs_alias_the_data(work):
    before = tree(work)
    refused(cli("analyze", work / "m.onnx", "--sensitivity", "--data", work / "d.npz", "--json", work / "d.npz"),
            before, work, needles=["refusing to overwrite the data"])


def test_prune_json_on_the_models_external_data_file(work):
    before = tree(work)
    refused(cli("prune", work / "m.onnx", "--ratio", "0.5", "-o", work / "out.onnx", "--json", work / "out.onnx.data"),
            before, work, needles=["external data file that -o may write"])


@pytest.mark.parametrize("flag", ["-o", "--json"])
def test_prune_output_aliases_external_data_of_the_input(flag, external, tmp_path):
    data = external.parent / "e.onnx.data"
    args = ["-o", tmp_path / "o.onnx", "--json", data] if flag == "--json" else ["-o", data]
    before = tree(external.parent, tmp_path)
    refused(cli("prune", external, "--ratio", "0.5", *args), before, external.parent, tmp_path,
            needles=["refusing to overwrite"])


def test_prune_output_data_file_would_replace_the_input(work):
    """-o m.onnx.data.onnx is fine; -o m where m.data is read... here: -o x with x.data = an input."""
    (work / "x.data").write_bytes((work / "m.onnx").read_bytes())
    before = tree(work)
    refused(cli("prune", work / "x.data", "-o", work / "x", "--ratio", "0.5"), before, work,
            needles=["external data file of -o"])


@pytest.mark.parametrize("how", SPELLINGS)
@pytest.mark.parametrize("flag", ["--json", "--plot"])
def test_analyze_output_aliases_the_model(flag, how, work):
    model = work / "m.png"  # the case: a model file whose name looks like an image
    shutil.copy(work / "m.onnx", model)
    alias = spell(model, how, work)
    before = tree(work)
    refused(cli("analyze", model, flag, alias), before, work, needles=["refusing to overwrite", flag])


def test_analyze_json_and_plot_name_one_file(work):
    before = tree(work)
    refused(cli("analyze", work / "m.onnx", "--json", work / "a.png", "--plot", work / "a.png"), before, work,
            needles=["name the same file"])


@pytest.mark.parametrize("how", SPELLINGS)
@pytest.mark.parametrize("target", ["original", "pruned", "data"])
def test_verify_json_aliases_an_input(target, how, work):
    paths = {"original": work / "m.onnx", "pruned": work / "p.onnx", "data": work / "d.npz"}
    alias = spell(paths[target], how, work)
    before = tree(work)
    refused(cli("verify", work / "m.onnx", work / "p.onnx", "--data", work / "d.npz", "--json", alias), before, work, needles=["refusing to overwrite", "--json"])


@pytest.mark.parametrize("how", SPELLINGS)
def test_bench_json_aliases_a_model(how, work):
    alias = spell(work / "p.onnx", how, work)
    before = tree(work)
    refused(cli("bench", work / "m.onnx", work / "p.onnx", "--runs", "1", "--json", alias),
            before, work, needles=["refusing to overwrite a benchmarked model"])


def test_bench_json_on_external_data(external, tmp_path):
    before = tree(external.parent)
    refused(cli("bench", external, "--runs", "1", "--json", external.parent / "e.onnx.data"), before, external.parent,
            needles=["refusing to overwrite external data"])


# ================================================================ 2. the environment fails
@pytest.mark.parametrize("command", ["prune", "analyze"])
def test_empty_output_path(command, work):
    args = ["-o", ""] if command == "prune" else ["--json", ""]
    extra = ["--ratio", "0.5"] if command == "prune" else []
    before = tree(work)
    refused(cli(command, work / "m.onnx", *extra, *args), before, work, needles=["is an empty path"])


@pytest.mark.parametrize("flag", ["-o", "--json", "--plan"])
def test_output_name_too_long(flag, work):
    long = work / ("x" * 300 + ".onnx")
    args = {"-o": ["-o", long], "--json": ["-o", work / "o.onnx", "--json", long],
            "--plan": ["-o", work / "o.onnx", "--plan", long]}[flag]
    before = tree(work)
    refused(cli("prune", work / "m.onnx", "--ratio", "0.5", *args), before, work, needles=["file name is", "bytes"])


@pytest.mark.parametrize("flag", ["-o", "--json"])
def test_output_is_a_directory(flag, work):
    (work / "dir").mkdir()
    args = ["-o", work / "dir"] if flag == "-o" else ["-o", work / "o.onnx", "--json", work / "dir"]
    before = tree(work)
    refused(cli("prune", work / "m.onnx", "--ratio", "0.5", *args), before, work, needles=["is a directory"])


@pytest.mark.parametrize("errno_, needle", [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only"),
                                            (errno.EACCES, "permission denied")])
def test_json_write_failure_publishes_nothing(errno_, needle, work, monkeypatch):
    """The model is staged; then the JSON cannot be written: no model is left behind either."""
    from onnxprune.graph import outputs as outputs_module

    real = outputs_module.OutputSet.stage_bytes

    def failing(self, label, data):
        if label == "json_path":
            raise outputs_module.write_error(OSError(errno_, os.strerror(errno_)), self.paths[label])
        return real(self, label, data)

    monkeypatch.setattr(outputs_module.OutputSet, "stage_bytes", failing)
    before = tree(work)
    refused(cli("prune", work / "m.onnx", "--ratio", "0.5", "-o", work / "o.onnx", "--plan", work / "n.json",
                "--json", work / "s.json"), before, work, needles=[needle])


def test_unreadable_model(work, monkeypatch):
    real = Path.read_bytes

    def denied(self):
        if self.name == "m.onnx":
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(self)

    before = tree(work)
    with monkeypatch.context() as patched:
        patched.setattr(Path, "read_bytes", denied)
        result = cli("prune", work / "m.onnx", "-o", work / "o.onnx", "--ratio", "0.5")
    refused(result, before, work, needles=["cannot read", "permission denied"])


def _unshare(script: str, cwd: Path, map_root: bool = True) -> subprocess.CompletedProcess:
    flags = ["--user", "--map-root-user", "--mount"] if map_root else ["--user"]
    return subprocess.run(["unshare", *flags, "sh", "-c", script], capture_output=True, text=True, cwd=cwd, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def _can_unshare(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    done = _unshare(f"mount -t tmpfs -o size=16k tmpfs {probe} && echo ok", tmp_path)
    probe.rmdir()
    return done.returncode == 0 and "ok" in done.stdout


def _cli_line(*args) -> str:
    return " ".join([sys.executable, "-m", "onnxprune.cli", *map(lambda a: f"'{a}'", args)])


@pytest.mark.parametrize("mount, needle", [("size=64k", "no space left"), ("ro", "read-only")])
def test_full_and_read_only_file_systems(mount, needle, work):
    """A real tmpfs mounted in a user namespace: full (the model does not fit) or read-only."""
    if not _can_unshare(work):
        pytest.skip("this machine cannot mount a tmpfs in a user namespace")
    target = work / "fs"
    target.mkdir()
    before = tree(work)
    script = (f"mount -t tmpfs -o {mount} tmpfs {target} && {_cli_line('prune', work / 'm.onnx', '-o', target / 'p.onnx', '--ratio', '0.5', '--json', target / 's.json')}; "
              f"code=$?; ls -A {target}; exit $code")
    done = _unshare(script, work)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], done.stderr
    assert done.stdout.strip() == "", f"left in the file system: {done.stdout}"
    assert tree(work) == before


def test_folder_without_write_permission(work):
    """EACCES for real: as a user who may not write the folder (an unmapped user namespace when
    the tests run as root, where permissions would not apply)."""
    target = work / "locked"
    target.mkdir()
    target.chmod(0o555)
    before = tree(work)
    command = _cli_line("prune", work / "m.onnx", "-o", target / "p.onnx", "--ratio", "0.5")
    if os.geteuid() != 0:
        done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, cwd=work, timeout=120)
    elif _can_unshare(work):
        done = _unshare(command, work, map_root=False)
    else:
        pytest.skip("running as root without user namespaces: permissions cannot be tested")
    target.chmod(0o755)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "permission denied" in lines[0], done.stderr
    assert tree(work) == before


# ================================================================ 3. input shapes that cannot be allocated
@pytest.mark.parametrize("command", ["prune", "verify", "bench", "analyze"])
def test_declared_huge_dim(command, tmp_path):
    model = conv_model(tmp_path / "huge.onnx", dims=(1, 3, 2**40, 8))
    args = {"prune": ["prune", model, "-o", tmp_path / "o.onnx", "--ratio", "0.5"], "verify": ["verify", model, model],
            "bench": ["bench", model, "--runs", "1"], "analyze": ["analyze", model]}[command]
    before = tree(tmp_path)
    refused(cli(*args), before, tmp_path, needles=["needs", "TiB", "more than this machine"])


@pytest.mark.parametrize("command", ["prune", "verify", "bench"])
def test_given_huge_input_shape(command, tmp_path):
    model = conv_model(tmp_path / "dyn.onnx", dims=("N", 3, "H", "W"))
    args = {"prune": ["prune", model, "-o", tmp_path / "o.onnx", "--ratio", "0.5"], "verify": ["verify", model, model],
            "bench": ["bench", model, "--runs", "1"]}[command]
    before = tree(tmp_path)
    refused(cli(*args, "--input-shape", "x:1x3x100000000x100000000"), before, tmp_path,
            needles=["needs", "PiB", "give a smaller --input-shape"])


def test_npz_header_claims_8_tib(work):
    forged = work / "forged.npz"
    with zipfile.ZipFile(forged, "w") as archive, archive.open("input.npy", "w") as member:
        np.lib.format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (2**31, 1, 32, 32)})
        member.write(b"\0" * 64)
    before = tree(work)
    refused(cli("verify", work / "m.onnx", work / "p.onnx", "--data", forged), before, work,
            needles=["claims shape", "corrupt or truncated"])


@pytest.mark.parametrize("command", ["prune", "verify", "bench", "analyze"])
def test_declared_zero_dim(command, tmp_path):
    model = conv_model(tmp_path / "zero.onnx", dims=(1, 3, 0, 8))
    args = {"prune": ["prune", model, "-o", tmp_path / "o.onnx", "--ratio", "0.5"], "verify": ["verify", model, model],
            "bench": ["bench", model, "--runs", "1"], "analyze": ["analyze", model]}[command]
    before = tree(tmp_path)
    refused(cli(*args), before, tmp_path, needles=["declares size 0 on axis 2"])


@pytest.mark.parametrize("args", [["analyze"], ["analyze", "--self-check"], ["analyze", "--plot", "g.png"],
                                  ["prune", "--ratio", "0.5", "-o", "o.onnx"], ["verify", "SELF"], ["bench"]])
def test_dynamic_dims_need_an_input_shape(args, tmp_path, monkeypatch):
    """One rule in every command: a dynamic dim other than the batch is never guessed as 0."""
    monkeypatch.chdir(tmp_path)
    model = conv_model(tmp_path / "dyn.onnx", dims=("N", 3, "H", "W"))
    command, *rest = args
    rest = [model if a == "SELF" else a for a in rest]
    before = tree(tmp_path)
    refused(cli(command, model, *rest), before, tmp_path,
            needles=["dynamic dims on axes 2, 3", "pass --input-shape x:1x3x<d2>x<d3>"])


# ================================================================ 4. inputs onnxprune does not handle
@pytest.mark.parametrize("wtype, name", [(TensorProto.BFLOAT16, "BFLOAT16"), (TensorProto.STRING, "STRING")])
@pytest.mark.parametrize("command", ["prune", "analyze"])
def test_weights_of_an_unhandled_type(command, wtype, name, tmp_path):
    model = conv_model(tmp_path / "w.onnx", wtype=wtype)
    args = ["prune", model, "-o", tmp_path / "o.onnx", "--ratio", "0.5"] if command == "prune" else ["analyze", model]
    before = tree(tmp_path)
    refused(cli(*args), before, tmp_path, needles=[f"tensor 'w1' has type {name}", "does not handle"])


@pytest.mark.parametrize("case, needle", [("int64", "the input model"), ("opset99", "the input model")])
def test_input_at_fault_is_named(case, needle, tmp_path):
    """Integer convolutions fail the full checker, opset 99 fails onnxruntime: the input's fault."""
    model = (conv_model(tmp_path / "m.onnx", elem=TensorProto.INT64, wtype=TensorProto.INT64) if case == "int64"
             else conv_model(tmp_path / "m.onnx", opset=99))
    before = tree(tmp_path)
    message = refused(cli("prune", model, "-o", tmp_path / "o.onnx", "--ratio", "0.5"), before, tmp_path,
                      needles=[needle])
    assert "rewritten" not in message and "pruned model" not in message


def test_nul_byte_in_external_data_location(tmp_path):
    model = onnx.load(str(DIGITS))
    tensor = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    onnx.save(model, str(tmp_path / "e.onnx"), save_as_external_data=True, location="e.data", size_threshold=1 << 30)
    model = onnx.load(str(tmp_path / "e.onnx"), load_external_data=False)
    target = next(t for t in model.graph.initializer if t.name == tensor.name)
    target.data_location = TensorProto.EXTERNAL
    target.ClearField("raw_data")
    for key, value in (("location", "e\0.data"), ("offset", "0"), ("length", str(len(tensor.raw_data)))):
        entry = target.external_data.add()
        entry.key, entry.value = key, value
    (tmp_path / "e.onnx").write_bytes(model.SerializeToString())
    before = tree(tmp_path)
    refused(cli("prune", tmp_path / "e.onnx", "-o", tmp_path / "o.onnx", "--ratio", "0.5"), before, tmp_path,
            needles=["NUL byte"])


@pytest.mark.parametrize("command", ["prune", "verify", "bench"])
def test_negative_seed(command, work):
    args = {"prune": ["prune", work / "m.onnx", "-o", work / "o.onnx", "--ratio", "0.5"],
            "verify": ["verify", work / "m.onnx", work / "p.onnx"], "bench": ["bench", work / "m.onnx"]}[command]
    before = tree(work)
    refused(cli(*args, "--seed", "-1"), before, work, needles=["--seed", "x>=0"])


def test_plan_nested_100000_deep(work):
    (work / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    before = tree(work)
    refused(cli("prune", work / "m.onnx", "-o", work / "o.onnx", "--plan", work / "deep.json"), before, work,
            needles=["nested too deeply"])


@pytest.mark.parametrize("name", ["g.bmp", "g", "g.pgf.zip"])
def test_plot_format_refused_before_the_work(name, work):
    before = tree(work)
    message = refused(cli("analyze", work / "m.onnx", "--plot", work / name, "--json", work / "a.json"), before, work,
                      needles=["--plot cannot write", ".png", ".svg", ".pdf"])
    assert "json" not in message.lower()


# ================================================================ 5. click's usage errors, one line
@pytest.mark.parametrize("args, needle", [
    (["prune", "DIR", "-o", "o.onnx", "--ratio", "0.5"], "is a directory"),
    (["analyze", "DIR"], "is a directory"),
    (["verify", "DIR", "DIR"], "is a directory"),
    (["bench", "DIR"], "is a directory"),
    (["prune", "M", "-o", "o.onnx", "--ratio", "abc"], "'abc' is not a valid float"),
    (["prune", "M", "-o", "o.onnx", "--ratio", "0.5", "--criterion", "l7"], "'l7' is not one of"),
    (["prune", "M", "--ratio", "0.5"], "missing option '-o'"),
    (["prune", "M", "-o", "o.onnx", "--ratio", "0.5", "--no-such-option"], "no such option"),
    (["analyze"], "missing argument 'MODEL'"),
    (["bench", "M", "--runs", "0"], "'--runs': 0 is not in the range x>=1"),
    (["frobnicate"], "no such command 'frobnicate'"),
])
def test_usage_errors_are_one_line(args, needle, work, monkeypatch):
    monkeypatch.chdir(work)
    (work / "DIR").mkdir()
    args = [str(work / "m.onnx") if a == "M" else str(work / "DIR") if a == "DIR" else a for a in args]
    before = tree(work)
    refused(cli(*args), before, work, needles=[needle])


def test_help_is_unchanged_by_the_error_handling():
    result = ok(cli("prune", "--help"))
    assert result.stdout.startswith("Usage: ") and "exactly one amount" in " ".join(result.stdout.split())


# ================================================================ 6. outputs that look valid but are not
@pytest.mark.parametrize("args, needle", [
    (["--ratio", "0.5", "--exclude", "*"], "--exclude leaves out all 6 prunable groups"),
    (["--ratio", "0.5", "--min-channels", "1000000000"], "--min-channels 1000000000 keeps every channel"),
    (["--ratio", "-0.0"], "--ratio of 0 removes no channel"),
    (["--ratio", "0.01"], "removes less than one rounding step (--round-to auto"),
    (["--ratio", "0.01", "--round-to", "1"], "removes less than one channel"),
    (["--ratio", "0.5", "--round-to", "64"], "--round-to 64 rounds every group back to its full width"),
    (["--target-macs", "1"], "--target-macs of 1 keeps every MAC"),
])
def test_noop_is_refused(args, needle, work):
    before = tree(work)
    refused(cli("prune", work / "m.onnx", "-o", work / "o.onnx", *args), before, work,
            needles=["nothing to prune", needle, "--allow-noop"])


def test_noop_allowed_writes_a_checked_copy(work):
    result = ok(cli("prune", work / "m.onnx", "-o", work / "o.onnx", "--ratio", "0", "--allow-noop"))
    assert "unchanged copy" in result.stdout
    runs(work / "o.onnx")


def test_exclude_matching_nothing(work):
    before = tree(work)
    refused(cli("prune", work / "m.onnx", "-o", work / "o.onnx", "--ratio", "0.5", "--exclude", "nothing-like-this*"),
            before, work, needles=["--exclude pattern 'nothing-like-this*' matches no node or tensor name"])


def test_bn_scale_on_a_model_without_batchnorm(tmp_path):
    model = conv_model(tmp_path / "m.onnx")
    before = tree(tmp_path)
    refused(cli("prune", model, "-o", tmp_path / "o.onnx", "--ratio", "0.5", "--criterion", "bn-scale"), before,
            tmp_path, needles=["no prunable group of this model has a BatchNorm"])


def test_custom_op_rejected_by_onnxruntime_is_one_line(tmp_path):
    """onnxruntime's own (coloured, multi-line) log output never reaches stderr."""
    from test_cli import three_conv_model

    model = three_conv_model(tmp_path / "m.onnx", "Foo", domain="com.example")
    before = tree(tmp_path)
    for args in (["prune", model, "-o", tmp_path / "o.onnx", "--ratio", "0.5"], ["bench", model, "--runs", "1"],
                 ["verify", model, model]):
        refused(cli(*args), before, tmp_path, needles=["onnxruntime cannot load"])


# ================================================================ 7. signals at chosen moments
# The child sends the signal to itself at one moment ("window"), by wrapping the function that
# runs then: no sleeps, no timing. Before the outputs are published: exit 130/143, nothing left.
# Once they are published (during the renames, after them, while the process exits): exit 0,
# every output whole, and a warning that the signal was ignored.
CHILD = """
import atexit, importlib, os, signal, sys
from onnxprune import pipeline
from onnxprune.graph import outputs
prune_cli = importlib.import_module("onnxprune.cli.prune")
sig = getattr(signal, sys.argv[1]); where = sys.argv[2]
def kill():
    os.kill(os.getpid(), sig)
def kill_then(fn):
    def wrapper(*args, **kwargs):
        kill()
        return fn(*args, **kwargs)
    return wrapper
def kill_after(fn):
    def wrapper(*args, **kwargs):
        result = fn(*args, **kwargs)
        kill()
        return result
    return wrapper
def kill_mid_write(write):
    def wrapper(temp):
        with open(temp, "wb") as fh:
            fh.write(b"partial")
        kill()
        return write(temp)
    return wrapper
if where == "probing":  # the output folder is probed: its probe file was just made
    outputs.tempfile.mkstemp = kill_after(outputs.tempfile.mkstemp)
elif where == "loading":
    pipeline.read_model = kill_then(pipeline.read_model)
elif where == "analyzing":
    pipeline.analyze = kill_then(pipeline.analyze)
elif where == "checking":
    pipeline.finalize = kill_then(pipeline.finalize)
elif where == "staging":  # the temporary model file half written
    real = outputs.OutputSet.stage_file
    outputs.OutputSet.stage_file = lambda self, label, write: real(self, label, kill_mid_write(write))
elif where == "staged":  # every temporary file whole, before the commit
    outputs.OutputSet.commit = kill_then(outputs.OutputSet.commit)
elif where == "external":
    outputs.write_external = kill_then(outputs.write_external)
elif where == "commit":  # inside the commit, at its first rename
    os.replace = kill_then(os.replace)
elif where == "printing":  # published; the summary is being printed
    prune_cli._print = kill_then(prune_cli._print)
elif where == "exiting":  # published and printed; the interpreter shuts down
    atexit.register(kill)
from onnxprune.cli import run
sys.argv = ["onnxprune", *sys.argv[3:]]
run()
"""
BEFORE = ["probing", "loading", "analyzing", "checking", "staging", "staged"]
AFTER = ["commit", "printing", "exiting"]


def _child(sig: str, where: str, *args) -> subprocess.CompletedProcess:
    def default_signals():  # a background job inherits an ignored SIGINT: the test must not depend on it
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    return subprocess.run([sys.executable, "-c", CHILD, sig, where, *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=300, preexec_fn=default_signals)


@pytest.mark.parametrize("where", BEFORE + AFTER)
@pytest.mark.parametrize("sig, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_signal_leaves_nothing_half_written(sig, code, where, work):
    out = work / "out"
    out.mkdir()
    before = tree(work)
    done = _child(sig, where, "prune", work / "m.onnx", "-o", out / "p.onnx", "--ratio", "0.5",
                  "--plan", out / "plan.json", "--json", out / "s.json")
    assert "Traceback" not in done.stderr
    if where in AFTER:  # published: the command has succeeded, and says that the signal was ignored
        assert done.returncode == 0, done.stderr
        if where != "exiting":  # after the last line was printed, nothing more is said
            assert done.stderr.strip().splitlines()[-1].startswith(f"warning: {sig} arrived after the outputs were "
                                                                    "written"), done.stderr
        assert sorted(p.name for p in out.iterdir()) == ["p.onnx", "plan.json", "s.json"]
        runs(out / "p.onnx")
        json.loads((out / "s.json").read_text())
    else:
        assert done.returncode == code, done.stderr
        word = "interrupted" if sig == "SIGINT" else "terminated"
        assert done.stderr.strip().splitlines()[-1] == f"{word}; nothing was written", done.stderr
        assert tree(work) == before


@pytest.mark.parametrize("sig, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_signal_while_writing_external_data(sig, code, external, tmp_path):
    before = tree(external.parent, tmp_path)
    done = _child(sig, "external", "prune", external, "-o", tmp_path / "p.onnx", "--ratio", "0.5")
    assert done.returncode == code, done.stderr
    assert "nothing was written" in done.stderr
    assert tree(external.parent, tmp_path) == before
