"""Study files: parse a YAML study, validate it with errors that name the line, expand it into runs.

A study is the whole experiment in one file: data sets, models, a training recipe, forget requests,
methods (a list value in ``params`` is a grid), seeds, and published numbers to show beside ours.
Parsing keeps every node's line (yaml's compose API) so a semantic error — an unknown method, a class
out of range, a string where a number belongs — points at ``study.yaml:LINE`` and not just at a key.
"""
from __future__ import annotations

import dataclasses
import difflib
import itertools
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..data import ForgetRequest
from ..data.sources import SOURCES
from ..errors import ObliviateError
from ..methods import METHODS, load_all, resolve_params
from ..metrics.lira import PerExampleMIA
from ..models import MODELS
from ..params import SEED_MAX, ConversionError, check_value, convert, declared
from ..training import TrainConfig
from .tuning import DEFAULT_SELECT, SELECT_RULES

#: Pseudo-methods the harness runs itself: ``original`` evaluates θ₀ unchanged (the "before" row) and
#: ``retrain`` is the exact-unlearning reference (train from scratch on D_r with the original recipe),
#: trained once per request and seed and reused by every method's comparison.
REFERENCE_METHODS = ("original", "retrain")

TOP_KEYS = {"name", "description", "datasets", "models", "train", "requests", "methods", "seeds", "evaluate",
            "published", "device"}
DATASET_KEYS = {"name", "data_root", "root", "label", "val_fraction", "test_fraction", "train_per_class",
                "test_per_class", "split_seed", "train", "backdoor"}
BACKDOOR_KEYS = {"n", "target", "seed"}
#: The data spec key of a data set whose training split carries a planted backdoor (see harness.runner).
PLANT_BACKDOOR = "plant_backdoor"
MODEL_KEYS = {"name", "label", "options", "train"}
REQUEST_KEYS = {"classes", "fraction", "ids", "ids_file", "backdoor", "subset_per_class", "seed", "label"}
REQUEST_WHAT = ("classes", "fraction", "ids", "ids_file", "backdoor")
METHOD_KEYS = {"name", "label", "params", "models", "requests", "datasets", "grid", "select"}
#: The evaluate key that adds the per-example attack (LiRA) to sample requests: K, or {shadows, max_epochs, seed}.
PER_EXAMPLE_MIA = "per_example_mia"
PER_EXAMPLE_KEYS = {"shadows", "max_epochs", "seed"}
EVAL_KEYS = {"relearn", "figures", "keep_models", PER_EXAMPLE_MIA}
PUBLISHED_KEYS = {"dataset", "model", "request", "method", "metric", "value", "source", "note"}


class StudyError(ObliviateError):
    """A study file problem, with ``file:line`` in the message."""


# ------------------------------------------------------------------ YAML with line numbers
class Located:
    """Plain data from YAML plus a path → line map, so any value can be traced to its line."""

    def __init__(self, data: Any, lines: dict[tuple, int], file: str):
        self.data, self.lines, self.file = data, lines, file

    def line(self, path: tuple) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)

    def error(self, path: tuple, msg: str) -> StudyError:
        line = self.line(tuple(path))
        where = f"{self.file}:{line}" if line else self.file
        dotted = _dotted(path)
        return StudyError(f"{where}: {dotted + ': ' if dotted else ''}{msg}")


def _dotted(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _walk(node: yaml.Node, path: tuple, lines: dict, file: str) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else str(k.value)
            if key in seen:
                raise StudyError(f"{file}:{k.start_mark.line + 1}: key {key!r} appears twice "
                                 f"(first on line {seen[key]})")
            seen[key] = k.start_mark.line + 1
            lines[path + (key,)] = k.start_mark.line + 1
            _walk(v, path + (key,), lines, file)
            lines[path + (key,)] = k.start_mark.line + 1  # a key's line, not its value's
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _walk(v, path + (i,), lines, file)


def load_yaml(text: str, file: str = "<study>") -> Located:
    """Parse YAML text; syntax errors become ``file:line:col: problem``."""
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                raise StudyError(f"{file}: the study file is empty")
            lines: dict[tuple, int] = {}
            _walk(node, (), lines, file)
            data = loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else file
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise StudyError(f"{where}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise StudyError(f"{file}: YAML error: {exc}") from None
    return Located(data, lines, file)


# ------------------------------------------------------------------ the parsed study
@dataclass
class DatasetEntry:
    label: str
    spec: dict  # DataSpec fields (name, root, train_per_class, ...)
    train: dict = field(default_factory=dict)
    path: tuple = ()


@dataclass
class ModelEntry:
    label: str
    name: str
    options: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    path: tuple = ()


@dataclass
class RequestEntry:
    label: str
    request: dict  # ForgetRequest.to_dict() minus seed when it follows the run seed
    seed: int | None = None
    path: tuple = ()


@dataclass
class MethodEntry:
    label: str
    name: str
    params: dict  # one grid point
    only_models: tuple = ()
    only_requests: tuple = ()
    only_datasets: tuple = ()
    path: tuple = ()
    grid: dict = field(default_factory=dict)  # tuned entry: values to search per parameter (harness.tuning)
    select: str = ""  # its selection rule


@dataclass
class Study:
    name: str
    description: str
    file: str
    text: str
    datasets: list[DatasetEntry]
    models: list[ModelEntry]
    train: dict
    requests: list[RequestEntry]
    methods: list[MethodEntry]
    seeds: list[int]
    evaluate: dict
    published: list[dict]
    device: str | None = None
    located: Located | None = None

    def error(self, path: tuple, msg: str) -> StudyError:
        return self.located.error(path, msg) if self.located else StudyError(f"{self.file}: {msg}")


def _type_name(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a mapping", type(None): "null"}.get(type(v), type(v).__name__)


def _expect(doc: Located, path: tuple, value: Any, kind, what: str) -> Any:
    ok = isinstance(value, kind) and not (kind in (int, float, (int, float)) and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise doc.error(path, f"expected {what}, got {_type_name(value)} {value!r}")
    return value


def _unknown_keys(doc: Located, path: tuple, mapping: dict, allowed: set, what: str) -> None:
    for k in mapping:
        if k not in allowed:
            close = difflib.get_close_matches(str(k), sorted(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise doc.error(path + (k,), f"unknown {what} key {k!r}{hint}; valid: {', '.join(sorted(allowed))}")


def _choose(doc: Located, path: tuple, name: str, choices: list[str], what: str) -> None:
    if name not in choices:
        close = difflib.get_close_matches(name, choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise doc.error(path, f"unknown {what} {name!r}{hint}; choose one of: {', '.join(choices)}")


def _check_train(doc: Located, path: tuple, train: Any) -> dict:
    """Type-check TrainConfig overrides against the dataclass's annotations."""
    if train is None:
        return {}
    _expect(doc, path, train, dict, "a mapping of training options")
    hints = typing.get_type_hints(TrainConfig)
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    out = {}
    for k, v in train.items():
        if k in ("model", "seed"):
            where = "list models under models:" if k == "model" else "list seeds under seeds:"
            raise doc.error(path + (k,), f"{k!r} is not a training option here: {where}")
        if k not in names:
            close = difflib.get_close_matches(k, sorted(names), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise doc.error(path + (k,), f"unknown training option {k!r}{hint}")
        out[k] = _coerce(doc, path + (k,), v, hints[k])
        try:
            check_value("train", k, out[k], hints[k], declared(TrainConfig, k))
        except ObliviateError as exc:
            raise doc.error(path + (k,), str(exc)) from None
    return out


def _coerce(doc: Located, path: tuple, v: Any, annotation: Any) -> Any:
    """Check one value against a dataclass annotation (int, float, bool, str, Optional[...], dict)."""
    try:
        return convert(v, annotation)
    except ConversionError as exc:
        got = "null" if v is None else f"{_type_name(v)} {v!r}"
        raise doc.error(path, f"expected {exc.kind}, got {got}") from None


def _resolve_root(root: str, study_dir: Path) -> str:
    """Relative data roots resolve against the study file's folder, then the working directory."""
    p = Path(os.path.expandvars(os.path.expanduser(root)))
    if p.is_absolute():
        return str(p)
    for base in (study_dir, Path.cwd()):
        if (base / p).exists():
            return str((base / p).resolve())
    return str((study_dir / p).resolve())


def _is_list_type(annotation: Any) -> bool:
    ann = annotation
    for a in typing.get_args(annotation) or ():
        if a is not type(None):
            ann = a
    return typing.get_origin(ann) in (list, tuple) or ann in (list, tuple)


def _named_entries(doc: Located, d: dict, section: str, allowed: set, what: str,
                   choices: list[str]) -> list[tuple[tuple, dict]]:
    """The entries of a list section (``datasets``, ``models``): a bare name or a mapping with a valid name."""
    listed = isinstance(d[section], list)
    out = []
    for i, e in enumerate(d[section] if listed else [d[section]]):
        p = (section, i) if listed else (section,)
        if isinstance(e, str):
            e = {"name": e}
        _expect(doc, p, e, dict, f"a {what} name or mapping")
        _unknown_keys(doc, p, e, allowed, what)
        if "name" not in e:
            raise doc.error(p, f"a {what} needs a name")
        _expect(doc, p + ("name",), e["name"], str, "a string")
        _choose(doc, p + ("name",), e["name"], choices, what)
        out.append((p, e))
    return out


def is_folder_name(name: str) -> bool:
    """Whether ``name`` can name one folder under another: no separator, no ``.``/``..``, no control
    characters (labels and the study name come from a received file and become paths)."""
    return bool(name.strip()) and "/" not in name and "\\" not in name and name.strip() not in (".", "..") \
        and all(c.isprintable() for c in name)


def _path_label(doc: Located, path: tuple, entry: dict) -> str:
    """A data set's or model's label (default: its name). It names folders under the work folder, so path
    syntax in it (``/``, ``..``) is refused here, with its line, rather than let a model land elsewhere."""
    label = str(entry.get("label") or entry["name"])
    if not is_folder_name(label):
        raise doc.error(path + (("label",) if "label" in entry else ()),
                        f"label {label!r} names a folder: no '/', '\\', control characters, '.' or '..'")
    return label


def parse_study(text: str, file: str = "<study>", *, data_roots: dict[str, str] | None = None) -> Study:
    """Parse and structurally validate a study (no data loaded: see ``check_study`` for that)."""
    doc = load_yaml(text, file)
    d = doc.data
    study_dir = Path(file).parent if file and not file.startswith("<") else Path.cwd()
    if not isinstance(d, dict):
        raise doc.error((), f"a study is a mapping (name:, datasets:, models:, ...), got {_type_name(d)}")
    _unknown_keys(doc, (), d, TOP_KEYS, "study")
    for req in ("datasets", "models", "requests", "methods"):
        if req not in d or d[req] in (None, [], {}):
            raise doc.error((), f"missing {req!r}: a study needs datasets, models, requests and methods")
    name = d.get("name") or Path(file).stem
    _expect(doc, ("name",), name, str, "a string")
    if not is_folder_name(name):  # it names the report's folder (reports/NAME/ beside the store)
        raise doc.error(("name",) if "name" in d else (), f"study name {name!r} names a folder: no '/', '\\', "
                        "control characters, '.' or '..'")
    datasets = _parse_datasets(doc, d, study_dir, data_roots)
    models = _parse_models(doc, d)
    train = _check_train(doc, ("train",), d.get("train"))
    requests = _parse_requests(doc, d, study_dir)
    methods = _parse_methods(doc, d, datasets, models, requests)
    seeds = _parse_seeds(doc, d)
    evaluate = _parse_evaluate(doc, d, requests)
    published = _parse_published(doc, d, datasets, models, requests)
    device = d.get("device")
    if device is not None:
        _expect(doc, ("device",), device, str, "a device string (cpu, cuda, cuda:1, auto)")
    return Study(name, str(d.get("description") or ""), file, text, datasets, models, train, requests, methods,
                 seeds, evaluate, published, device, doc)


def _parse_datasets(doc: Located, d: dict, study_dir: Path, data_roots: dict[str, str] | None) -> list[DatasetEntry]:
    datasets: list[DatasetEntry] = []
    for p, e in _named_entries(doc, d, "datasets", DATASET_KEYS, "data set", sorted(SOURCES)):
        spec: dict[str, Any] = {"name": e["name"]}
        root = e.get("data_root", e.get("root"))
        if data_roots and e["name"] in data_roots:
            root = data_roots[e["name"]]
        if root is not None:
            _expect(doc, p + ("data_root",), root, str, "a path")
            spec["root"] = _resolve_root(root, study_dir)
        for k, kind in (("val_fraction", float), ("test_fraction", float), ("train_per_class", int),
                        ("test_per_class", int), ("split_seed", int)):
            if e.get(k) is not None:
                spec[k] = _expect(doc, p + (k,), e[k], kind, "a number" if kind is float else "an integer")
        if e.get("backdoor") is not None:
            spec[PLANT_BACKDOOR] = _parse_backdoor(doc, p + ("backdoor",), e["backdoor"])
        label = _path_label(doc, p, e)
        datasets.append(DatasetEntry(label, spec, _check_train(doc, p + ("train",), e.get("train")), p))
    _unique(doc, [x.label for x in datasets], [x.path for x in datasets], "data set")
    return datasets


def _parse_backdoor(doc: Located, p: tuple, e: Any) -> dict:
    """``backdoor: {n, target, seed}``: poison n training samples of other classes with a trigger that
    teaches ``target`` (chosen with ``seed``, default 0), so a ``backdoor: true`` request can delete them."""
    _expect(doc, p, e, dict, "a mapping {n: samples to poison, target: class, seed: optional}")
    _unknown_keys(doc, p, e, BACKDOOR_KEYS, "backdoor")
    for k in ("n", "target"):
        if k not in e:
            raise doc.error(p, f"backdoor needs {k}: (n: how many training samples carry the trigger, "
                               "target: the class it teaches)")
    plan = {k: _expect(doc, p + (k,), e[k], int, "an integer") for k in ("n", "target")}
    plan["seed"] = _expect(doc, p + ("seed",), e.get("seed", 0), int, "an integer")
    if plan["n"] < 1 or plan["target"] < 0 or plan["seed"] < 0:
        k = "n" if plan["n"] < 1 else "target" if plan["target"] < 0 else "seed"
        raise doc.error(p + (k,), f"backdoor {k} must be >= {1 if k == 'n' else 0}, got {plan[k]}")
    return plan


def _parse_models(doc: Located, d: dict) -> list[ModelEntry]:
    models: list[ModelEntry] = []
    for p, e in _named_entries(doc, d, "models", MODEL_KEYS, "model", sorted(MODELS)):
        options = _expect(doc, p + ("options",), e.get("options") or {}, dict, "a mapping")
        models.append(ModelEntry(_path_label(doc, p, e), e["name"], options,
                                 _check_train(doc, p + ("train",), e.get("train")), p))
    _unique(doc, [x.label for x in models], [x.path for x in models], "model")
    return models


def _parse_requests(doc: Located, d: dict, study_dir: Path) -> list[RequestEntry]:
    requests: list[RequestEntry] = []
    _expect(doc, ("requests",), d["requests"], list, "a list of forget requests")
    for i, e in enumerate(d["requests"]):
        p = ("requests", i)
        _expect(doc, p, e, dict, "a mapping with classes:, fraction:, ids: or backdoor: true")
        _unknown_keys(doc, p, e, REQUEST_KEYS, "request")
        req = _request_what(doc, p, e, study_dir)
        if e.get("subset_per_class") is not None:
            req["subset_per_class"] = _expect(doc, p + ("subset_per_class",), e["subset_per_class"], int,
                                              "an integer")
            if req["subset_per_class"] < 1:
                raise doc.error(p + ("subset_per_class",), "subset_per_class must be >= 1")
        seed = _expect(doc, p + ("seed",), e["seed"], int, "an integer") if e.get("seed") is not None else None
        if seed is not None and seed < 0:
            raise doc.error(p + ("seed",), f"seed must be >= 0, got {seed}")
        label = e.get("label")
        requests.append(RequestEntry(str(label if label is not None else _request_label(req)), req, seed, p))
    _unique(doc, [x.label for x in requests], [x.path for x in requests], "request")
    return requests


def _request_what(doc: Located, p: tuple, e: dict, study_dir: Path) -> dict[str, Any]:
    """What a request forgets: exactly one of classes, fraction, ids, an ids file (read here), or the
    samples its data set's backdoor poisoned (resolved per data set when the study is planned)."""
    given = [k for k in REQUEST_WHAT if e.get(k) is not None]
    if len(given) != 1:
        raise doc.error(p, "a request takes exactly one of classes:, fraction:, ids:, ids_file: or backdoor: true "
                           f"(got {', '.join(given) or 'none'})")
    if "backdoor" in given:
        if _expect(doc, p + ("backdoor",), e["backdoor"], bool, "true") is not True:
            raise doc.error(p + ("backdoor",), "backdoor: true forgets the samples the data set's backdoor "
                                               "poisoned; leave the key out otherwise")
        return {"backdoor": True}
    if "classes" in given:
        cl = e["classes"] if isinstance(e["classes"], list) else [e["classes"]]
        for j, c in enumerate(cl):
            _expect(doc, p + ("classes", j) if isinstance(e["classes"], list) else p + ("classes",), c, int,
                    "an integer class index")
        return {"classes": [int(c) for c in cl]}
    if "fraction" in given:
        f = _expect(doc, p + ("fraction",), e["fraction"], float, "a number in (0, 1)")
        if not 0.0 < f < 1.0:
            raise doc.error(p + ("fraction",), f"forget fraction must be in (0, 1), got {f}")
        return {"fraction": f}
    if "ids" in given:
        _expect(doc, p + ("ids",), e["ids"], list, "a list of sample ids")
        for j, v in enumerate(e["ids"]):
            _expect(doc, p + ("ids", j), v, int, "an integer sample id")
        return {"ids": [int(v) for v in e["ids"]]}
    f = _expect(doc, p + ("ids_file",), e["ids_file"], str, "a path")
    try:
        return {"ids": list(ForgetRequest.from_ids_file(_resolve_root(f, study_dir)).ids)}
    except ObliviateError as exc:
        raise doc.error(p + ("ids_file",), str(exc)) from None


def _request_label(req: dict) -> str:
    if req.get("backdoor"):
        return "backdoor"
    if "classes" in req:
        return ("class " if len(req["classes"]) == 1 else "classes ") + ",".join(map(str, req["classes"]))
    if "fraction" in req:
        return f"random {req['fraction']:.0%}" if req["fraction"] * 100 == int(req["fraction"] * 100) \
            else f"random {req['fraction']:.1%}"
    return f"{len(req['ids'])} ids"


def _parse_methods(doc: Located, d: dict, datasets: list[DatasetEntry], models: list[ModelEntry],
                   requests: list[RequestEntry]) -> list[MethodEntry]:
    """The methods to run; a list value in ``params`` is a grid, expanded into one entry per point."""
    load_all()
    known = sorted(set(METHODS) | set(REFERENCE_METHODS))
    methods: list[MethodEntry] = []
    _expect(doc, ("methods",), d["methods"], list, "a list of methods")
    for i, e in enumerate(d["methods"]):
        p = ("methods", i)
        if isinstance(e, str):
            e = {"name": e}
        _expect(doc, p, e, dict, "a method name or mapping")
        _unknown_keys(doc, p, e, METHOD_KEYS, "method")
        if "name" not in e:
            raise doc.error(p, "a method needs a name")
        _expect(doc, p + ("name",), e["name"], str, "a string")
        mname = e["name"]
        _choose(doc, p + ("name",), mname, known, "method")
        params = _expect(doc, p + ("params",), e.get("params") or {}, dict, "a mapping of parameters")
        only = {}
        for k, pool in (("models", [m.label for m in models]), ("requests", [r.label for r in requests]),
                        ("datasets", [x.label for x in datasets])):
            vals = e.get(k)
            if vals is None:
                only[k] = ()
                continue
            vals = vals if isinstance(vals, list) else [vals]
            for v in vals:
                _choose(doc, p + (k,), str(v), pool, k[:-1] + " label")
            only[k] = tuple(str(v) for v in vals)
        if mname in REFERENCE_METHODS and mname not in METHODS and params:
            raise doc.error(p + ("params",), f"{mname!r} is the harness's reference and takes no parameters")
        if e.get("grid") is not None or e.get("select") is not None:
            grid, select = _parse_tuning(doc, p, mname, params, e)
            methods.append(MethodEntry(str(e.get("label") or mname), mname, params, only["models"],
                                       only["requests"], only["datasets"], p, grid, select))
            continue
        grid_keys, points = _grid_points(doc, p, mname, params)
        for point in points:
            label = e.get("label") or mname
            if grid_keys:
                label = f"{label}[" + ",".join(f"{k}={point[k]}" for k in grid_keys) + "]"
            methods.append(MethodEntry(str(label), mname, point, only["models"], only["requests"],
                                       only["datasets"], p))
    _unique(doc, [m.label for m in methods], [m.path for m in methods], "method")
    return methods


def _grid_points(doc: Located, p: tuple, mname: str, params: dict) -> tuple[list, list[dict]]:
    """(grid keys, every parameter point): a list value is a grid axis unless the parameter is a list."""
    grid_keys, grid_vals = [], []
    hints: dict = {}
    if mname in METHODS:
        hints = typing.get_type_hints(METHODS[mname].Params)
    for k, v in params.items():
        if isinstance(v, list) and not (_is_list_type(hints.get(str(k).replace("-", "_"))) and
                                        not any(isinstance(x, list) for x in v)):
            if not v:
                raise doc.error(p + ("params", k), "an empty grid: give at least one value")
            grid_keys.append(k)
            grid_vals.append(v)
    points = [dict(params, **dict(zip(grid_keys, combo))) for combo in itertools.product(*grid_vals)]
    for point in points:
        if mname in METHODS and (point or mname not in REFERENCE_METHODS):
            try:
                resolve_params(METHODS[mname](), point)
            except (ObliviateError, TypeError) as exc:
                bad = next((k for k in point if str(k) in str(exc)), None)
                msg = str(exc) if str(exc).startswith(mname) else f"{mname}: {exc}"
                raise doc.error(p + ("params", bad) if bad else p + ("params",), msg) from None
    return grid_keys, points


def _parse_tuning(doc: Located, p: tuple, mname: str, params: dict, e: dict) -> tuple[dict, str]:
    """``grid:`` (parameter -> values to search on the validation split) and ``select:`` (the rule)."""
    if mname not in METHODS:
        raise doc.error(p + ("grid",), f"{mname!r} is the harness's reference: it has nothing to tune")
    grid = _expect(doc, p + ("grid",), e.get("grid"), dict, "a mapping of parameter: [values to search]")
    if not grid:
        raise doc.error(p + ("grid",), "an empty grid: give at least one parameter and its values")
    for k, v in grid.items():
        if not isinstance(v, list) or not v:
            raise doc.error(p + ("grid", k), f"expected a non-empty list of values to search, got {v!r}")
        if k in params:
            raise doc.error(p + ("grid", k), f"{k!r} is both fixed in params: and searched in grid:")
    select = e.get("select", DEFAULT_SELECT)
    _choose(doc, p + ("select",), str(select), sorted(SELECT_RULES), "selection rule")
    for combo in itertools.product(*grid.values()):
        try:
            resolve_params(METHODS[mname](), {**params, **dict(zip(grid, combo))})
        except (ObliviateError, TypeError) as exc:
            bad = next((k for k in grid if str(k) in str(exc)), None)
            raise doc.error(p + ("grid", bad) if bad else p + ("grid",), str(exc)) from None
    return grid, str(select)


def _parse_seeds(doc: Located, d: dict) -> list[int]:
    seeds_raw = d.get("seeds", [0])
    seeds_list = seeds_raw if isinstance(seeds_raw, list) else [seeds_raw]
    seeds = [_expect(doc, ("seeds", j) if isinstance(seeds_raw, list) else ("seeds",), s, int, "an integer seed")
             for j, s in enumerate(seeds_list)]
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0 or max(seeds) > SEED_MAX:
        raise doc.error(("seeds",), f"must be a non-empty list of distinct integers in 0..{SEED_MAX}")
    return seeds


def _parse_evaluate(doc: Located, d: dict, requests: list[RequestEntry]) -> dict:
    ev = _expect(doc, ("evaluate",), d.get("evaluate") or {}, dict, "a mapping")
    _unknown_keys(doc, ("evaluate",), ev, EVAL_KEYS, "evaluate")
    evaluate = {"relearn": True, "figures": True, "keep_models": False}
    for k in EVAL_KEYS - {PER_EXAMPLE_MIA}:
        if k in ev:
            evaluate[k] = _expect(doc, ("evaluate", k), ev[k], bool, "true or false")
    if ev.get(PER_EXAMPLE_MIA) is not None:  # only when given: the key is part of every run's identity
        evaluate[PER_EXAMPLE_MIA] = _parse_per_example_mia(doc, ("evaluate", PER_EXAMPLE_MIA), ev[PER_EXAMPLE_MIA])
        if all("classes" in r.request for r in requests):
            raise doc.error(("evaluate", PER_EXAMPLE_MIA), "the per-example attack is for sample requests "
                                                           "(ids:, fraction:, backdoor:); this study has only classes:")
    return evaluate


def _parse_per_example_mia(doc: Located, p: tuple, e: Any) -> dict:
    """``per_example_mia: K`` or ``{shadows: K, max_epochs: E, seed: S}``, checked by ``PerExampleMIA``."""
    e = {"shadows": e} if isinstance(e, int) and not isinstance(e, bool) else e
    _expect(doc, p, e, dict, "a number of shadow models K or a mapping {shadows: K, max_epochs: E, seed: S}")
    _unknown_keys(doc, p, e, PER_EXAMPLE_KEYS, PER_EXAMPLE_MIA)
    if "shadows" not in e:
        raise doc.error(p, "per_example_mia needs shadows: (K, the number of shadow models)")
    try:
        PerExampleMIA(recipe=TrainConfig(), **e)
    except ObliviateError as exc:
        raise doc.error(p + (next((k for k in e if k in str(exc)), "shadows"),), str(exc)) from None
    return dict(e)


def _parse_published(doc: Located, d: dict, datasets: list[DatasetEntry], models: list[ModelEntry],
                     requests: list[RequestEntry]) -> list[dict]:
    """Published numbers to show beside ours; each names labels of this study."""
    published = []
    pub = d.get("published") or []
    _expect(doc, ("published",), pub, list, "a list of published numbers")
    for i, e in enumerate(pub):
        p = ("published", i)
        _expect(doc, p, e, dict, "a mapping (dataset, model, request, method, metric, value, source)")
        _unknown_keys(doc, p, e, PUBLISHED_KEYS, "published")
        for k in ("method", "metric", "value", "source"):
            if k not in e:
                raise doc.error(p, f"a published number needs {k}:")
        _expect(doc, p + ("value",), e["value"], float, "a number")
        for k, pool in (("dataset", [x.label for x in datasets]), ("model", [m.label for m in models]),
                        ("request", [r.label for r in requests])):
            if e.get(k) is not None:
                _choose(doc, p + (k,), str(e[k]), pool, k + " label")
        published.append({k: e.get(k) for k in PUBLISHED_KEYS})
    return published


def _unique(doc: Located, labels: list[str], paths: list[tuple], what: str) -> None:
    seen: dict[str, tuple] = {}
    for label, path in zip(labels, paths):
        if label in seen:
            raise doc.error(path, f"{what} label {label!r} is used twice; give one a distinct label:")
        seen[label] = path


def load_study(path: str | Path, **kw) -> Study:
    path = Path(path)
    if not path.exists():
        raise StudyError(f"study file {path} does not exist")
    if not path.is_file():
        what = "a folder" if path.is_dir() else "not a regular file"
        raise StudyError(f"study file {path} is {what}, not a YAML file")
    try:
        text = path.read_text()
    except UnicodeDecodeError as exc:
        raise StudyError(f"{path}: not a text file ({exc})") from None
    except OSError as exc:
        raise StudyError(f"cannot read study file {path}: {exc.strerror or exc}") from None
    return parse_study(text, str(path), **kw)
