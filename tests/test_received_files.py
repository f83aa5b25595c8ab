"""Files and paths from others (issue 26): each hostile or careless input is one line on stderr with exit 2
(or verify's exit 1), writes nothing outside the run's own folder, never hangs on a pipe, and a DeepObliviate
result is only called exact when its block index and snapshots are the ones its training run recorded."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_study_yaml
from typer.testing import CliRunner

import obliviate
from obliviate.api import forget
from obliviate.certificate import verify
from obliviate.cli.bench_cmd import default_report_dir
from obliviate.cli.main import app
from obliviate.data import ForgetRequest
from obliviate.errors import CheckpointError, ObliviateError
from obliviate.harness.study import parse_study
from obliviate.training import TrainConfig, train
from obliviate.training.checkpoint import Snapshots

MLP = dict(model="mlp", batch_size=64, lr=0.05, seed=0)
SRC = str(Path(obliviate.__file__).resolve().parents[1])  # the subprocesses run the code under test


def cli(*args, env: dict | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def one_line(result, *needles: str, code: int = 2) -> str:
    """Exit ``code``, exactly one line on stderr, no traceback, holding every needle."""
    assert result.exit_code == code, (result.exit_code, result.output, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output + result.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def tree(path: Path) -> dict:
    """Every file under ``path`` with its content (what a command must not change)."""
    return {p: p.read_bytes() for p in sorted(Path(path).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def blocks(digits, tmp_path_factory) -> Path:
    """A block-incremental MLP run (4 blocks) whose run.json records the SHA-256 of its snapshots."""
    cfg = TrainConfig(blocks=4, epochs_per_block=1, schedule="cosine", **MLP)
    return train(digits, cfg, tmp_path_factory.mktemp("r26") / "blocks").run.path


@pytest.fixture(scope="module")
def plain(digits, tmp_path_factory) -> Path:
    return train(digits, TrainConfig(epochs=1, **MLP), tmp_path_factory.mktemp("r26") / "plain").run.path


@pytest.fixture(scope="module")
def unlearned(plain, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("r26") / "unlearned"
    forget(plain, ForgetRequest.for_classes(3), "finetune", params={"epochs": 0.2}, out=out)
    return out


def block_ids(run: Path, block: int, n: int) -> list[int]:
    arr = np.load(run / "snapshots" / "blocks.npy")
    return arr[arr[:, 1] == block, 0][:n].tolist()


def ids_file(tmp_path: Path, ids) -> Path:
    p = tmp_path / "ids.txt"
    p.write_text(" ".join(map(str, ids)))
    return p


# ------------------------------------------------------------------ 1. the study name names a folder
@pytest.mark.parametrize("name", ["../../../../../tmp/ESCAPED", "a/b", "..", "x\\y", "tab\there"])
def test_study_name_that_is_a_path_is_refused(name, tmp_path):
    text = tiny_study_yaml(name=json.dumps(name))
    with pytest.raises(ObliviateError, match=r"study.yaml:1: .*study name"):
        parse_study(text, str(tmp_path / "study.yaml"))
    study = tmp_path / "study.yaml"
    study.write_text(text)
    one_line(cli("bench", study, "--dry-run", "--store", tmp_path / "esc" / "r.sqlite"), "study name")
    assert not (tmp_path / "esc").exists()


def test_report_refuses_a_stored_study_name_that_leaves_its_folder(tmp_path):
    with pytest.raises(ObliviateError, match="not a folder name"):
        default_report_dir(tmp_path / "esc" / "r.sqlite", "../../../../tmp/ESCAPED")
    assert default_report_dir(tmp_path / "r.sqlite", "quick") == tmp_path / "reports" / "quick"


# ------------------------------------------------------------------ 2. a symlinked snapshots/ in --out
@pytest.mark.parametrize("force", [False, True])
def test_symlinked_snapshots_folder_is_refused(force, tmp_path):
    other = tmp_path / "other" / "snapshots"
    other.mkdir(parents=True)
    (other / "step_00000004.pt").write_bytes(b"someone else's work")
    run = tmp_path / "run"
    run.mkdir()
    (run / "snapshots").symlink_to(other, target_is_directory=True)
    before = tree(tmp_path / "other")
    args = ["train", "--dataset", "digits", "--model", "mlp", "--epochs", 1, "--snapshot-every", 4, "--out", run]
    one_line(cli(*args, *(["--force"] if force else [])), "symbolic link")
    assert tree(tmp_path / "other") == before and not (run / "run.json").exists()


# ------------------------------------------------------------------ 3. --out is the run it reads
def test_forget_out_equal_to_checkpoint_is_refused(plain, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(plain, run)
    before = tree(run)
    one_line(cli("forget", "--checkpoint", run, "--method", "finetune", "--forget-class", 1, "--out", run,
                 "--force"), "is the run it reads")
    one_line(cli("forget", "--checkpoint", run, "--method", "finetune", "--forget-class", 1,
                 "--out", tmp_path / "." / "run", "--force"), "is the run it reads")
    assert tree(run) == before


def test_forget_out_equal_to_the_original_of_the_chain_is_refused(plain, unlearned, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(plain, root)
    u1 = tmp_path / "u1"
    forget(root, ForgetRequest.for_classes(3), "finetune", params={"epochs": 0.2}, out=u1)
    before = tree(root)
    with pytest.raises(CheckpointError, match="is the run it reads"):
        forget(u1, ForgetRequest.for_classes(5), "finetune", params={"epochs": 0.2}, out=root, overwrite=True)
    assert tree(root) == before


def test_verify_refuses_a_certificate_naming_its_own_run_as_parent(unlearned, tmp_path):
    run = tmp_path / "u"
    shutil.copytree(unlearned, run)
    cert = json.loads((run / "certificate.json").read_text())
    cert["parent"].update(path=str(run.resolve()), relpath=".")
    from obliviate.certificate import _self_hash  # the test re-seals it, as a forger would
    cert["certificate_sha256"] = _self_hash(cert)
    (run / "certificate.json").write_text(json.dumps(cert))
    one_line(cli("verify", run), "itself as its parent", code=1)


# ------------------------------------------------------------------ 4. DeepObliviate's index and snapshots
def _tamper_index(run: Path, how: str) -> None:
    path = run / "snapshots" / "blocks.npy"
    arr = np.load(path)
    if how == "move":  # 20 ids of block 1 (0-based 0) said to be in block 4: only block 4 would be retrained
        arr[np.flatnonzero(arr[:, 1] == 0)[:20], 1] = 3
    elif how == "all-zero":
        arr[:, 1] = 0
    else:  # an id the training set does not hold
        arr[0, 0] = 10**9
    np.save(path, arr)


@pytest.mark.parametrize("how", ["move", "all-zero", "unknown-id"])
def test_deepobliviate_refuses_an_edited_block_index(blocks, how, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(blocks, run)
    ids = block_ids(run, 0, 20)
    _tamper_index(run, how)
    one_line(cli("forget", "--checkpoint", run, "--method", "deepobliviate", "--forget-ids", ids_file(tmp_path, ids),
                 "--param", "epsilon=0", "--out", tmp_path / "o"), "blocks.npy", "SHA-256")
    assert not (tmp_path / "o").exists()


def test_deepobliviate_refuses_a_replaced_block_snapshot(blocks, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(blocks, run)
    shutil.copy(run / "snapshots" / "block_003.pt", run / "snapshots" / "block_002.pt")
    ids = block_ids(run, 2, 5)
    one_line(cli("forget", "--checkpoint", run, "--method", "deepobliviate", "--forget-ids", ids_file(tmp_path, ids),
                 "--out", tmp_path / "o"), "block_002.pt", "SHA-256")


def test_deepobliviate_refuses_snapshots_without_recorded_hashes(blocks, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(blocks, run)
    rec = json.loads((run / "run.json").read_text())
    del rec["snapshots"]["sha256"]
    (run / "run.json").write_text(json.dumps(rec))
    with pytest.raises(CheckpointError, match="records no SHA-256"):
        Snapshots(run).block_assignment()
    one_line(cli("forget", "--checkpoint", run, "--method", "deepobliviate", "--forget-ids",
                 ids_file(tmp_path, block_ids(run, 1, 5)), "--out", tmp_path / "o"), "records no SHA-256")


def test_verify_covers_the_original_record_and_the_snapshots_deepobliviate_used(blocks, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(blocks, run)
    out = tmp_path / "do"
    one = forget(run, ForgetRequest.for_ids(block_ids(run, 1, 5)), "deepobliviate", params={"epsilon": 0}, out=out)
    assert one[1]["info"]["exact_retraining"] is True
    r = cli("verify", out)
    assert r.exit_code == 0, r.stderr
    assert any("block_002.pt" in c for c in verify(out).checked)
    snap = run / "snapshots" / "block_002.pt"
    saved = snap.read_bytes()
    shutil.copy(run / "snapshots" / "block_001.pt", snap)
    one_line(cli("verify", out), "block_002.pt", code=1)
    snap.write_bytes(saved)
    record = run / "run.json"
    data = bytearray(record.read_bytes())
    i = data.index(b'"steps"') + 1
    data[i] ^= 0x01  # one flipped bit in the original run's record (a key now reads "rteps")
    record.write_bytes(bytes(data))
    one_line(cli("verify", out), "original run's record", code=1)


def test_verify_detects_a_flipped_byte_in_the_original_record_of_any_chain(plain, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(plain, root)
    out = tmp_path / "u"
    forget(root, ForgetRequest.for_classes(3), "finetune", params={"epochs": 0.2}, out=out)
    rec = (root / "run.json").read_text()
    (root / "run.json").write_text(rec.replace('"seed": 0', '"seed": 1', 1))
    one_line(cli("verify", out), "original run's record", code=1)


# ------------------------------------------------------------------ 5, 7. ids are integers, nothing else
BAD_IDS = {
    "floats.npy": (np.array([12.7, 13.2, 100.9]), "float64"),
    "bools.npy": (np.array([True, False, True]), "bool"),
    "complex.npy": (np.array([1 + 2j, 3 + 0j]), "complex"),
    "strings.npy": (np.array(["12", "13"]), "<U2"),
    "nan.npy": (np.array([np.nan]), "float64"),
    "huge.txt": ("100000000000000000000000000", "out of range"),
    "float.txt": ("12.7 13", "integer"),
    "nan.txt": ("nan", "integer"),
    "binary.txt": (b"\xff\xfe\x00", "integer"),
    "empty-bytes.npy": (b"", "not a list of integer ids"),
    "empty-array.npy": (np.array([], np.int64), "empty"),
    "uint64.npy": (np.array([2**64 - 1], np.uint64), "out of range"),
}


@pytest.mark.parametrize("name", list(BAD_IDS))
def test_forget_ids_that_are_not_integers_are_refused(plain, name, tmp_path):
    value, needle = BAD_IDS[name]
    p = tmp_path / name
    if isinstance(value, np.ndarray):
        np.save(p, value)
    elif isinstance(value, bytes):
        p.write_bytes(value)
    else:
        p.write_text(value)
    one_line(cli("forget", "--checkpoint", plain, "--method", "finetune", "--forget-ids", p, "--out", tmp_path / "o"),
             needle)
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ 6. the ids file a run.json names
@pytest.mark.parametrize("target", ["/etc/passwd", ".", "../unlearned/forgotten_ids.txt"])
def test_run_json_cannot_point_the_ids_file_elsewhere(unlearned, target, tmp_path):
    run = tmp_path / "u"
    shutil.copytree(unlearned, run)
    rec = json.loads((run / "run.json").read_text())
    cum = rec["lineage"]["cumulative"]
    cum.pop("ids", None)
    cum["ids_file"] = target
    (run / "run.json").write_text(json.dumps(rec))
    line = one_line(cli("forget", "--checkpoint", run, "--method", "finetune", "--forget-class", 1,
                        "--out", tmp_path / "o"), "corrupt", "ids_file")
    assert "root:" not in line


def test_ids_file_that_is_a_symlink_is_refused(tmp_path):
    from obliviate.lineage import read_ids
    run = tmp_path / "u"
    run.mkdir()
    (run / "forgotten_ids.txt").symlink_to("/etc/passwd")
    with pytest.raises(CheckpointError, match="symbolic link"):
        read_ids(run, {"ids_file": "forgotten_ids.txt", "ids_sha256": "x"})


# ------------------------------------------------------------------ 8. --data-root garbage, every reader
def _garbage_roots(root: Path) -> dict[str, tuple[str, Path]]:
    """(data set, root) pairs of files that are not what the reader expects."""
    def write(name: str, data: bytes) -> Path:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        return p

    cases = {
        "letter text": ("letter", write("letter.data", b"A,1,2\nnot,a,row\n")),
        "letter ragged": ("letter", write("letter2.data", b"A,1,2\nB,1\n")),
        "mnist-5k": ("mnist-5k", write("m.csv", b"1,2,3\n4,5\n")),
        "svhn": ("svhn", (write("svhn/train_32x32.mat", b"MATLAB junk" * 20),
                          write("svhn/test_32x32.mat", b"junk"))[0].parent),
        "cifar10 not a zip": ("cifar10", write("c.npz", b"PK\x03\x04 not really a zip")),
    }
    npz = root / "float-offsets.npz"
    np.savez(npz, train_jpeg=np.zeros(10, np.uint8), train_offsets=np.array([0.5, 3.7]),
             test_jpeg=np.zeros(10, np.uint8), test_offsets=np.array([0, 4]), train_labels=np.array([0]),
             test_labels=np.array([0]))
    cases["cifar10 float offsets"] = ("cifar10", npz)
    shapes = root / "shapes.npz"
    np.savez(shapes, train_jpeg=np.zeros(10, np.uint8), train_offsets=np.array([0, 10]),
             test_jpeg=np.zeros(10, np.uint8), test_offsets=np.array([0, 10]), train_labels=np.array([[0, 1]]),
             test_labels=np.array([0]))
    cases["cifar10 wrong shapes"] = ("cifar10", shapes)
    for split in ("train", "test"):
        write(f"tree/{split}/cat/a.png", b"\x89PNG\r\n\x1a\n broken")
    cases["cifar10 broken png"] = ("cifar10", root / "tree")
    fm = root / "fm"
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"):
        write(f"fm/{name}", b"\x1f\x8b\x08\x00 not gzip at all")
    cases["fashion-mnist gz"] = ("fashion-mnist", fm)
    return cases


def test_garbage_data_files_are_one_line_in_every_reader(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("OBLIVIATE_CACHE", str(cache))
    for case, (name, root) in _garbage_roots(tmp_path / "data").items():
        r = cli("train", "--dataset", name, "--data-root", root, "--model", "mlp", "--epochs", 1,
                "--out", tmp_path / "o")
        line = one_line(r, name)
        assert "error:" in line, case
        assert not (tmp_path / "o").exists(), case
    assert not cache.exists() or not any(cache.rglob("*.npy"))


# ------------------------------------------------------------------ 9. damaged run.json fields
DAMAGE = {
    "config null": lambda r: r.update(config=None),
    "config list": lambda r: r.update(config=[1, 2]),
    "config junk types": lambda r: r.update(config={**r["config"], "epochs": "ten"}),
    "model null": lambda r: r.update(model=None),
    "model list": lambda r: r.update(model=["cnn"]),
    "data string": lambda r: r.update(data="digits"),
    "spec list": lambda r: r["data"].update(spec=[1]),
    "split seed -1": lambda r: r["data"]["spec"].update(split_seed=-1),
    "spec root /etc/passwd": lambda r: r["data"]["spec"].update(name="letter", root="/etc/passwd"),
    "kind number": lambda r: r.update(kind=3),
    "no request": lambda r: r.pop("request"),
    "junk request": lambda r: r.update(request="all of it"),
    "request classes strings": lambda r: r["request"].update(classes=["three"]),
    "request ids floats": lambda r: r["request"].update(ids=[1.5]),
    "lineage empty": lambda r: r.update(lineage={}),
    "lineage list": lambda r: r.update(lineage=[1]),
    "cumulative classes junk": lambda r: r["lineage"]["cumulative"].update(classes="3"),
    "cumulative ids junk": lambda r: r["lineage"]["cumulative"].update(ids=[None]),
    "requests junk": lambda r: r["lineage"].update(requests=[3]),
    "original pointer junk": lambda r: r["lineage"].update(original=7),
    "snapshots list": lambda r: r.update(snapshots=[1]),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_run_json_is_one_line_for_every_reader(unlearned, case, tmp_path):
    run = tmp_path / "u"
    shutil.copytree(unlearned, run)
    rec = json.loads((run / "run.json").read_text())
    DAMAGE[case](rec)
    (run / "run.json").write_text(json.dumps(rec))
    r = cli("forget", "--checkpoint", run, "--method", "finetune", "--forget-class", 1, "--out", tmp_path / "o")
    one_line(r)
    assert not (tmp_path / "o").exists()
    for args in (["history", run], ["verify", run],
                 ["evaluate", "--original", run, "--unlearned", run, "--no-figures", "--no-relearn",
                  "--out", tmp_path / "e"]):
        r = cli(*args)
        assert r.exit_code in (0, 1, 2) and "Traceback" not in r.output + r.stderr, (case, args[0], r.stderr)
        if r.exit_code == 2:
            one_line(r)
    assert not (tmp_path / "e").exists() or not any((tmp_path / "e").iterdir())


# ------------------------------------------------------------------ 10. seeds past 64 bits
def test_seed_past_64_bits_is_one_line(plain, tmp_path):
    big = str(2**64)
    one_line(cli("train", "--dataset", "digits", "--model", "mlp", "--epochs", 1, "--seed", big,
                 "--out", tmp_path / "t"), "seed")
    one_line(cli("forget", "--checkpoint", plain, "--method", "finetune", "--forget-class", 1, "--seed", big,
                 "--out", tmp_path / "f"), "--seed")
    assert not (tmp_path / "t").exists() and not (tmp_path / "f").exists()
    with pytest.raises(ObliviateError, match=r"study.yaml:\d+: seeds: must be"):
        parse_study(tiny_study_yaml(seeds=(2**64,)), str(tmp_path / "study.yaml"))


# ------------------------------------------------------------------ 11, 15. markup and newlines in paths
@pytest.mark.parametrize("name", ["no[/]where", "[bold]x[/bold]", "a\nb", "tab\tx\rz"])
def test_paths_print_as_one_literal_line(name, tmp_path):
    missing = tmp_path / name
    line = one_line(cli("forget", "--checkpoint", missing, "--method", "finetune", "--forget-class", 1,
                        "--out", tmp_path / "o"), "does not exist")
    if "\n" not in name and "\t" not in name:
        assert name in line
    else:
        assert repr(name)[1:-1] in line


# ------------------------------------------------------------------ 12. a named pipe where a file belongs
def _run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "obliviate", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.parametrize("victim", ["model.pt", "run.json", "certificate.json"])
def test_named_pipe_in_a_run_folder_is_refused_not_waited_on(unlearned, victim, tmp_path):
    run = tmp_path / "u"
    shutil.copytree(unlearned, run)
    (run / victim).unlink()
    os.mkfifo(run / victim)
    for args, codes in ((["verify", run], (1, 2)), (["history", run], (2,)),
                        (["forget", "--checkpoint", run, "--method", "finetune", "--forget-class", 1,
                          "--out", tmp_path / "o"], (2,))):
        if victim == "certificate.json" and args[0] != "verify":
            continue  # only verify reads a certificate (forget hashes the parent's: covered by verify's read)
        p = _run_cli(*args)  # a hang fails the test (TimeoutExpired)
        assert p.returncode in codes, (args[0], p.returncode, p.stderr)
        assert "Traceback" not in p.stderr and "not a regular file" in p.stderr, (args[0], p.stderr)


def test_named_pipe_as_ids_or_data_file_is_refused(plain, tmp_path):
    fifo = tmp_path / "ids.npy"
    os.mkfifo(fifo)
    p = _run_cli("forget", "--checkpoint", plain, "--method", "finetune", "--forget-ids", fifo, "--out", tmp_path / "o")
    assert p.returncode == 2 and "not a regular file" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    data = tmp_path / "letter.data"
    os.mkfifo(data)
    p = _run_cli("train", "--dataset", "letter", "--data-root", data, "--model", "mlp", "--out", tmp_path / "t")
    assert p.returncode == 2 and "not a regular file" in p.stderr and len(p.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------ 13, 14. --out checked before any work
def test_unwritable_forget_out_is_refused_before_loading_anything(plain, tmp_path):
    cache = tmp_path / "fresh-cache"
    one_line(cli("forget", "--checkpoint", plain, "--method", "finetune", "--forget-class", 1, "--out", "/proc/x",
                 env={"OBLIVIATE_CACHE": str(cache)}), "/proc/x")
    assert not cache.exists()  # the data set was never loaded (it would have been cached here)


def test_empty_out_is_refused(plain, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line(cli("train", "--dataset", "digits", "--model", "mlp", "--epochs", 1, "--out", ""), "empty path")
    one_line(cli("forget", "--checkpoint", plain, "--method", "finetune", "--forget-class", 1, "--out", ""),
             "empty path")
    study = Path(__file__).parent.parent / "studies" / "quick.yaml"
    for args in (("bench", study, "--store", ""), ("bench", study, "--work", ""), ("results", "--store", ""),
                 ("results", "merge", "a.sqlite", "--into", ""), ("report", "--out", "")):
        one_line(cli(*args), "empty path")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ fuzz: damaged files, every reader
def _readers(run: Path, ids: Path):
    """Every reader of a received run folder or ids file, through the library (each must raise only
    ObliviateError, or succeed)."""
    import obliviate
    from obliviate.api import load_checkpoint
    from obliviate.certificate import history
    from obliviate.training import open_run

    return {"open_run": lambda: open_run(run), "load_checkpoint": lambda: load_checkpoint(run),
            "history": lambda: history(run), "verify": lambda: obliviate.verify(run),
            "ids": lambda: ForgetRequest.from_ids_file(ids)}


def _mutate_json(rng: np.random.Generator, obj):
    """One random structural edit somewhere in a JSON value: a field set to a value of another type."""
    junk = [None, -1, 2**70, 1.5, float("nan"), "", "../../etc/passwd", [], {}, [None], {"a": 1}, True]
    if isinstance(obj, dict) and obj:
        k = list(obj)[rng.integers(len(obj))]
        if rng.random() < 0.5 and isinstance(obj[k], (dict, list)) and obj[k]:
            _mutate_json(rng, obj[k])
        elif rng.random() < 0.2:
            del obj[k]
        else:
            obj[k] = junk[rng.integers(len(junk))]
    elif isinstance(obj, list) and obj:
        i = int(rng.integers(len(obj)))
        if isinstance(obj[i], (dict, list)) and obj[i] and rng.random() < 0.5:
            _mutate_json(rng, obj[i])
        else:
            obj[i] = junk[rng.integers(len(junk))]


def test_fuzz_damaged_run_json_ids_and_data_files_never_traceback(unlearned, tmp_path):
    rng = np.random.default_rng(26)
    text = (unlearned / "run.json").read_text()
    failures = []
    for trial in range(40):
        run = tmp_path / f"u{trial}"
        shutil.copytree(unlearned, run)
        if trial % 3 == 0:  # bytes flipped or cut
            data = bytearray(text.encode())
            for _ in range(int(rng.integers(1, 4))):
                data[int(rng.integers(len(data)))] = int(rng.integers(256))
            (run / "run.json").write_bytes(bytes(data[: int(rng.integers(len(data) // 2, len(data) + 1))]))
        else:
            rec = json.loads(text)
            for _ in range(int(rng.integers(1, 3))):
                _mutate_json(rng, rec)
            (run / "run.json").write_text(json.dumps(rec))
        ids = tmp_path / f"ids{trial}{'.npy' if trial % 2 else '.txt'}"
        ids.write_bytes(rng.integers(0, 256, int(rng.integers(0, 200)), dtype=np.uint8).tobytes()
                        if trial % 4 else b"\x93NUMPY\x01\x00" + rng.bytes(40))
        for name, read in _readers(run, ids).items():
            try:
                read()
            except ObliviateError:
                pass
            except Exception as exc:  # noqa: BLE001 - what the test is about
                failures.append(f"trial {trial} {name}: {type(exc).__name__}: {exc}")
        shutil.rmtree(run)
    assert not failures, "\n".join(failures[:10])


def test_fuzz_damaged_data_files_never_traceback(tmp_path, monkeypatch):
    from obliviate.data import load_data
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(8)
    letter = Path("/usr/share/opencv4/samples/data/letter-recognition.data")
    base = letter.read_bytes()[:20000] if letter.exists() else b"T,2,8,3,5,1,8,13,0,6,6,10,8,0,8,0,8\n" * 500
    failures = []
    for trial in range(12):
        data = bytearray(base)
        for _ in range(int(rng.integers(1, 20))):
            data[int(rng.integers(len(data)))] = int(rng.integers(256))
        p = tmp_path / f"letter{trial}.data"
        p.write_bytes(bytes(data))
        gz = tmp_path / f"fm{trial}"
        gz.mkdir()
        for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                     "t10k-labels-idx1-ubyte"):
            (gz / name).write_bytes(bytes([0, 0, 8, int(rng.integers(0, 4))]) + rng.bytes(int(rng.integers(0, 64))))
        for name, root in (("letter", p), ("fashion-mnist", gz), ("mnist-5k", p)):
            try:
                load_data(name, root=str(root))
            except ObliviateError:
                pass
            except Exception as exc:  # noqa: BLE001 - what the test is about
                failures.append(f"{name} trial {trial}: {type(exc).__name__}: {exc}")
    assert not failures, "\n".join(failures[:10])


def test_snapshot_hashes_recorded_at_training_match_the_files(blocks):
    rec = json.loads((blocks / "run.json").read_text())
    hashes = rec["snapshots"]["sha256"]
    assert set(hashes) == {f"block_{j:03d}.pt" for j in range(5)} | {"blocks.npy"}
    import hashlib
    for name, sha in hashes.items():
        assert hashlib.sha256((blocks / "snapshots" / name).read_bytes()).hexdigest() == sha
    assert torch.load(blocks / "snapshots" / "block_004.pt", weights_only=True)["block"] == 4
