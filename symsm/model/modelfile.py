"""Model files (TOML) and data files (.npy, .csv) for the command line and for scripts.

A model file holds one model::

    name = "student_t_2d"                     # optional (default: the file name without .toml)
    description = "bivariate Student-t"       # optional
    data = ["x0", "x1"]                       # the data coordinates
    params = ["m0", "m1", {name = "s", positive = true}, {name = "W", shape = [2, 2]},
              {name = "P", shape = [2, 2], symmetric = true}, {name = "b", shape = [2]}]
    log_f = "-(nu + 2)/2 * log(1 + ...)"      # the formula; W[0, 1] or W_0_1 name matrix entries
    domain = "real"                           # optional: "real", "nonnegative", "box", "sphere" or "simplex"
    weight = "t**2/(1 + t**2)"                # optional, domains "nonnegative" and "box": h(t) (default t**2);
                                              # "sphere", "simplex": "ones", "minsq" or "prodsq" (or h(x), sphere)
    transform = "sqrt"                        # optional, domain "simplex" only: "sqrt" (default) or "alr"
    a_c = 0.01                                # optional: the cap of the minsq / prodsq weight
    [init]                                    # optional starting values
    s = 1.0
    W = [[1.0, 0.0], [0.0, 1.0]]

A box domain (generalized score matching on aᵢ ≤ xᵢ ≤ bᵢ, symsm/model/box.py) takes its bounds from ``lower``
and ``upper``, each a number (every coordinate) or an array with one number per data coordinate; TOML's own
``inf`` and ``-inf`` leave a side open (``lower`` defaults to ``-inf``, ``upper`` to ``inf``, and at least one
must be given). The weight may be capped (``min``, ``max``) or one of genscore's named weights, by name or as
``[name, para, para2]``::

    domain = "box"
    lower = 0                                 # [0, 0, 0]
    upper = [1, 2, inf]                       # x0 ≤ 1, x1 ≤ 2, x2 unbounded above
    weight = "min(t**2, 1)"                   # or "min_pow", or ["min_pow", 2, 1]

A model written with vectors and matrices names its data vector with a size, and its formula uses whole
vectors and matrices (``@``, ``.T``, ``sum``, ``dot``, ``quad``; symsm/model/tensor_parse.py)::

    data = { name = "x", size = 128 }
    params = [{ name = "W", shape = [128, 128] }, { name = "b", shape = [128] }]
    log_f = "sum(-2*log(cosh(W @ x + b)))"

It takes domain = "real", "nonnegative", "box" (with lower, upper and weight as above) or "sphere" (weight 1).

Files come from anywhere, so everything in them is checked before it is used: unknown keys, wrong types
and sizes are refused with an error naming the file, the key and the problem (`ModelFileError`); the
formula goes through the allow-list parser (`symsm.model.parse`), never `eval`; sizes are bounded (file size,
number of data coordinates and parameters) so a hostile file cannot exhaust memory. Data files are read
without pickle (`numpy.load(..., allow_pickle=False)`).
"""

from __future__ import annotations

import csv
import math
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ModelError
from .box import Box
from .model import DOMAINS, WEIGHTED_DOMAINS, Model, _as_description, _as_name, _split_names

__all__ = [
    "MAX_FILE_BYTES",
    "ModelFileError",
    "example_models",
    "load_data",
    "load_model",
    "model_from_dict",
    "resolve_model_path",
]

MAX_FILE_BYTES = 4_000_000  # a model file; the formula itself is limited to 1M characters by the parser
MAX_DATA = 10_000  # data coordinates
MAX_PARAMETERS = 100_000  # entries of θ (a 128 × 128 unmixing matrix has 16 384)
KEYS = (
    "name",
    "description",
    "data",
    "params",
    "log_f",
    "domain",
    "lower",
    "upper",
    "weight",
    "init",
    "transform",
    "a_c",
)
REQUIRED = ("data", "params", "log_f")
PARAM_KEYS = ("name", "shape", "symmetric", "positive")


class ModelFileError(ModelError):
    """A model or data file cannot be used; the message names the file, the key and the problem."""

    def __init__(self, path: str | os.PathLike[str], key: str | None, problem: str) -> None:
        self.path = str(path)
        self.key = key
        self.problem = problem
        super().__init__(f"{self.path}: {key}: {problem}" if key else f"{self.path}: {problem}")


# ---------------------------------------------------------------------------------------------- models
def load_model(path: str | os.PathLike[str]) -> Model:
    """The model described by the TOML file at `path` (or a bundled example's name, see `example_models`)."""
    file = resolve_model_path(path)
    raw = _read_bytes(file, MAX_FILE_BYTES, "model file")
    try:
        text = raw.decode("utf-8-sig")  # a leading byte-order mark is not TOML
    except UnicodeDecodeError as exc:
        raise ModelFileError(file, None, f"is not UTF-8 text (byte {exc.start})") from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib counts lines and characters from 1 ("column"); symsm's messages keep "column" for data
        # columns (counted from 0) and call a position in a text "character"
        reason = re.sub(r"\bcolumn (\d+)", r"character \1", str(exc))
        raise ModelFileError(file, None, f"is not valid TOML: {reason}") from None
    return model_from_dict(table, source=file)


def model_from_dict(table: Mapping[str, Any], *, source: str | os.PathLike[str] = "<model>") -> Model:
    """The model described by a parsed model file (a mapping with the keys of the TOML format)."""
    src = Path(source)

    def fail(key: str | None, problem: str) -> ModelFileError:
        return ModelFileError(source, key, problem)

    if not isinstance(table, Mapping):
        raise fail(None, f"must be a table of keys, got {type(table).__name__}")
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise fail(unknown[0], f"unknown key (a model file has the keys {', '.join(KEYS)})")
    missing = [k for k in REQUIRED if k not in table]
    if missing:
        raise fail(missing[0], "is missing (required: " + ", ".join(REQUIRED) + ")")

    name = table.get("name", src.stem if src.suffix == ".toml" else "model")
    if not isinstance(name, str):
        raise fail("name", f"expected a string, got {_kind(name)}")
    try:
        name = _as_name(name)
    except ModelError as exc:
        raise fail("name", str(exc)) from None
    description = table.get("description", "")
    if not isinstance(description, str):
        raise fail("description", f"expected a string, got {_kind(description)}")
    try:
        description = _as_description(description)
    except ModelError as exc:
        raise fail("description", str(exc)) from None

    if isinstance(table["data"], Mapping):  # a data vector {name = "x", size = d}: a model written with vectors
        return _vector_model(table, name, description, fail)
    data = _names(table["data"], "data", fail)
    if len(data) > MAX_DATA:
        raise fail("data", f"has {len(data)} coordinates; the limit is {MAX_DATA}")
    specs = _param_specs(table["params"], fail)
    declared: dict[str, str] = {n: "data" for n in data}
    total = 0
    for k, spec in enumerate(specs):
        for entry in _entry_names(spec):
            if entry in declared:
                raise fail(f"params[{k}]", f"declares {entry!r}, which is already a {declared[entry]} name")
            declared[entry] = "parameter"
        total += _size(spec)
        if total > MAX_PARAMETERS:
            raise fail(f"params[{k}]", f"brings the number of parameters above the limit {MAX_PARAMETERS}")

    log_f = table["log_f"]
    if not isinstance(log_f, str):
        raise fail("log_f", f"expected a formula string, got {_kind(log_f)}")
    domain = table.get("domain", "real")
    if not isinstance(domain, str) or domain not in DOMAINS:
        raise fail("domain", f"expected one of {', '.join(map(repr, DOMAINS))}, got {domain!r}")
    domain_arg: str | Box = _box(table, domain, len(data), fail) if domain == "box" else domain
    for side in ("lower", "upper"):
        if side in table and domain != "box":
            raise fail(side, 'applies to domain = "box" only (the bounds of the box)')
    weight = table.get("weight")
    if weight is not None:
        if domain in ("sphere", "simplex"):
            if not isinstance(weight, str):
                raise fail(
                    "weight", f'expected "ones", "minsq", "prodsq" or a formula in the data, got {_kind(weight)}'
                )
        else:
            weight = _weight(weight, fail)
            if domain not in WEIGHTED_DOMAINS:
                raise fail("weight", 'applies to domain = "nonnegative", "box", "sphere" or "simplex" only')
    manifold: dict[str, Any] = {}
    transform = table.get("transform")
    if transform is not None:
        if domain != "simplex":
            raise fail("transform", 'applies to domain = "simplex" only')
        if not isinstance(transform, str):
            raise fail("transform", f'expected "sqrt" or "alr", got {_kind(transform)}')
        manifold["transform"] = transform
    a_c = table.get("a_c")
    if a_c is not None:
        if domain not in ("sphere", "simplex"):
            raise fail("a_c", 'applies to domain = "sphere" or "simplex" only')
        if isinstance(a_c, bool) or not isinstance(a_c, (int, float)):
            raise fail("a_c", f"expected a number in (0, 1], got {_kind(a_c)}")
        manifold["a_c"] = float(a_c)
    init = _checked_init(table, fail)

    try:
        return Model.from_string(
            log_f,
            data=data,
            params=specs,
            name=name,
            description=description,
            init=init,
            domain=domain_arg,
            weight=weight,
            **manifold,
        )
    except ModelError as exc:
        message = str(exc)
        key = next((k for k in ("init", "weight", "transform", "a_c") if message.startswith(k)), "log_f")
        raise fail(key, message.removeprefix(f"{key}: ")) from None


def _box(table: Mapping[str, Any], domain: str, d: int, fail: Any) -> Box:
    """The bounds of domain "box" from the keys lower and upper (a number, or one per data coordinate)."""
    if "lower" not in table and "upper" not in table:
        raise fail("domain", 'domain = "box" needs its bounds: lower and/or upper (a number or one per coordinate)')
    sides = {}
    for side, default in (("lower", -math.inf), ("upper", math.inf)):
        value = table.get(side, default)
        if isinstance(value, list):
            if len(value) != d:
                raise fail(side, f"has {len(value)} bounds; expected a number or {d}, one per data coordinate")
            for k, v in enumerate(value):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
                    raise fail(f"{side}[{k}]", f"expected a number (or inf, -inf), got {_kind(v)}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise fail(side, f"expected a number, inf, -inf or an array of them, got {_kind(value)}")
        sides[side] = value
    try:
        return Box(sides["lower"], sides["upper"])
    except ModelError as exc:
        raise fail("lower", str(exc).removeprefix("Box: ")) from None


def _weight(weight: Any, fail: Any) -> str | tuple[Any, ...]:
    """A weight formula in t, a named weight, or [name, para, para2] (genscore's named weights)."""
    if isinstance(weight, str):
        return weight
    if isinstance(weight, list) and weight and isinstance(weight[0], str):
        for k, v in enumerate(weight[1:], start=1):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise fail(f"weight[{k}]", f"expected a number (a parameter of {weight[0]}), got {_kind(v)}")
        return tuple(weight)
    raise fail(
        "weight", f'expected a formula in t such as "t**2/(1 + t**2)", a named weight or [name, para, para2], '
        f"got {_kind(weight)}"
    )  # fmt: skip


def _checked_init(table: Mapping[str, Any], fail: Any) -> Mapping[str, Any]:
    """The file's [init] table (empty if absent), every starting value a finite number or array of them."""
    init = table.get("init", {})
    if not isinstance(init, Mapping):
        raise fail("init", f"expected a table of starting values, got {_kind(init)}")
    for key, value in init.items():
        _check_numbers(value, f"init.{key}", fail)
    return init


def _vector_model(table: Mapping[str, Any], name: str, description: str, fail: Any) -> Model:
    """A model file whose data is a vector ``{name = "x", size = d}``: the formula names whole vectors and
    matrices (``sum(-2*log(cosh(W @ x)))``, symsm/model/tensor_parse.py)."""
    data = table["data"]
    unknown = sorted(set(data) - {"name", "size"})
    if unknown:
        raise fail(f"data.{unknown[0]}", "unknown key (a data vector has name and size)")
    if not isinstance(data.get("name"), str):
        raise fail("data.name", f"expected a name, got {_kind(data.get('name'))}" if "name" in data else "is missing")
    size = data.get("size")
    if type(size) is not int or not 1 <= size <= MAX_DATA:
        raise fail("data.size", f"expected a positive integer of at most {MAX_DATA}, got {size!r}")
    specs = _param_specs(table["params"], fail)
    total = 0
    for k, spec in enumerate(specs):
        if spec["name"] == data["name"]:
            raise fail(f"params[{k}]", f"declares {spec['name']!r}, which is already the data name")
        total += _size(spec)
        if total > MAX_PARAMETERS:
            raise fail(f"params[{k}]", f"brings the number of parameters above the limit {MAX_PARAMETERS}")
    log_f = table["log_f"]
    if not isinstance(log_f, str):
        raise fail("log_f", f"expected a formula string, got {_kind(log_f)}")
    domain = table.get("domain", "real")
    if domain not in ("real", "nonnegative", "box", "sphere"):
        raise fail(
            "domain", f'models written with vectors support "real", "nonnegative", "box" and "sphere", got {domain!r}'
        )
    for side in ("lower", "upper"):
        if side in table and domain != "box":
            raise fail(side, 'applies to domain = "box" only (the bounds of the box)')
    weight = table.get("weight")
    if weight is not None:
        if domain not in ("nonnegative", "box"):
            raise fail("weight", 'applies to domain = "nonnegative" or "box" only for models written with vectors')
        weight = _weight(weight, fail)
    domain_arg: str | Box = _box(table, domain, size, fail) if domain == "box" else domain
    init = _checked_init(table, fail)
    try:
        return Model.from_string(
            log_f,
            data={"name": data["name"], "size": size},
            params=specs,
            name=name,
            description=description,
            init=init,
            domain=domain_arg,
            weight=weight,
        )
    except ModelError as exc:
        message = str(exc)
        key = next((k for k in ("init", "weight") if message.startswith(k)), "log_f")
        raise fail(key, message.removeprefix(f"{key}: ")) from None


def _kind(value: Any) -> str:
    kinds = {str: "a string", bool: "a boolean", int: "an integer", float: "a number", list: "an array"}
    return kinds.get(type(value), "a table" if isinstance(value, Mapping) else type(value).__name__)


def _names(value: Any, key: str, fail: Any) -> list[str]:
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise fail(key, f"expected an array of names, got {_kind(value)}")
    try:
        return _split_names(value, key)
    except ModelError as exc:
        raise fail(key, str(exc).removeprefix(f"{key}: ")) from None


def _param_specs(value: Any, fail: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise fail("params", f"expected a non-empty array of names or tables, got {_kind(value)}")
    specs: list[dict[str, Any]] = []
    seen: set[str] = set()
    for k, item in enumerate(value):
        key = f"params[{k}]"
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, Mapping):
            raise fail(key, f"expected a name or a table {{name = ..., shape = [...]}}, got {_kind(item)}")
        unknown = sorted(set(item) - set(PARAM_KEYS))
        if unknown:
            raise fail(f"{key}.{unknown[0]}", f"unknown key (a parameter has {', '.join(PARAM_KEYS)})")
        name = item.get("name")
        if not isinstance(name, str):
            raise fail(f"{key}.name", f"expected a name, got {_kind(name)}" if "name" in item else "is missing")
        try:
            _split_names([name], "name")
        except ModelError as exc:
            raise fail(f"{key}.name", str(exc).removeprefix("name: ")) from None
        if name in seen:
            raise fail(f"{key}.name", f"{name!r} is declared twice")
        seen.add(name)
        spec: dict[str, Any] = {"name": name}
        for flag in ("positive", "symmetric"):
            if flag in item:
                if not isinstance(item[flag], bool):
                    raise fail(f"{key}.{flag}", f"expected true or false, got {item[flag]!r}")
                spec[flag] = item[flag]
        if "shape" in item:
            shape = item["shape"]
            if (
                not isinstance(shape, list)
                or len(shape) not in (1, 2)
                or not all(type(n) is int and 1 <= n <= MAX_PARAMETERS for n in shape)
            ):
                raise fail(f"{key}.shape", f"expected [n] or [rows, cols] of positive integers, got {shape!r}")
            if spec.get("symmetric") and (len(shape) != 2 or shape[0] != shape[1]):
                raise fail(f"{key}.symmetric", f"needs a square shape [d, d], got {shape!r}")
            spec["shape"] = shape
        elif spec.get("symmetric"):
            raise fail(f"{key}.symmetric", "needs shape = [d, d]")
        specs.append(spec)
    return specs


def _size(spec: Mapping[str, Any]) -> int:
    shape = spec.get("shape")
    if not shape:
        return 1
    if spec.get("symmetric"):
        return shape[0] * (shape[0] + 1) // 2
    return math.prod(shape)


def _entry_names(spec: Mapping[str, Any]) -> list[str]:
    """The names a parameter declares: itself, or its entries W_i_j / b_i (as `symsm.matrix` names them)."""
    name, shape = spec["name"], spec.get("shape")
    if not shape:
        return [name]
    if _size(spec) > MAX_PARAMETERS:
        return [name]  # refused by the caller's count before anything this large is built
    if len(shape) == 1:
        return [f"{name}_{i}" for i in range(shape[0])]
    return [f"{name}_{i}_{j}" for i in range(shape[0]) for j in range(shape[1])]


def _check_numbers(value: Any, key: str, fail: Any, depth: int = 0) -> None:
    if isinstance(value, list):
        if depth >= 2 or not value:
            raise fail(key, "expected a number, or an array (of arrays) of numbers")
        for k, v in enumerate(value):
            _check_numbers(v, f"{key}[{k}]", fail, depth + 1)
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise fail(key, f"expected a number, got {_kind(value)}")
    try:
        finite = math.isfinite(float(value))
    except OverflowError:
        finite = False
    if not finite:
        raise fail(key, f"expected a finite number, got {value!r}"[:200])


# ---------------------------------------------------------------------------------------------- examples
def example_models() -> dict[str, Path]:
    """The model files shipped with symsm (name → path), usable by name wherever a model file is."""
    folder = Path(str(resources.files("symsm.model") / "models"))
    return {p.stem: p for p in sorted(folder.glob("*.toml"))}


def resolve_model_path(spec: str | os.PathLike[str]) -> Path:
    """`spec` as a path if that file exists, else the bundled example of that name; errors name both."""
    path = Path(spec)
    if path.is_file():
        return path
    examples = example_models()
    if isinstance(spec, str) and spec in examples:
        return examples[spec]
    if path.exists():
        raise ModelFileError(path, None, "is not a regular file")
    raise ModelFileError(path, None, f"no such model file (bundled examples: {', '.join(examples) or 'none'})")


# ---------------------------------------------------------------------------------------------- data
def load_data(path: str | os.PathLike[str], model: Model | None = None) -> np.ndarray:
    """Data X of shape (N, d) from a .npy file (no pickle) or a .csv file (comma separated).

    A CSV file may start with a header row; when it names the model's data coordinates, those columns are
    used in the model's order (other columns are ignored), else the file must have exactly d columns.
    Values must be finite numbers; errors name the file and, for CSV, the line.
    """
    file = Path(path)
    if not file.is_file():
        raise ModelFileError(file, None, "no such data file" if not file.exists() else "is not a regular file")
    suffix = file.suffix.lower()
    if suffix == ".npy":
        X = _load_npy(file)
    elif suffix == ".csv":
        X = _load_csv(file, model)
    else:
        raise ModelFileError(file, None, f"unknown data format {suffix or '(no suffix)'!r}; use .npy or .csv")
    if X.ndim == 1 and model is not None and model.dim == 1:
        X = X.reshape(-1, 1)
    if X.ndim != 2:
        raise ModelFileError(file, None, f"data must be a 2-D array (N, d), got shape {X.shape}")
    if model is not None and X.shape[1] != model.dim:
        raise ModelFileError(
            file, None, f"data has {X.shape[1]} columns; the model has d = {model.dim} ({', '.join(model.data_names)})"
        )
    if X.shape[0] == 0:
        raise ModelFileError(file, None, "data has no rows")
    bad = ~np.isfinite(X)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise ModelFileError(file, None, f"data value at {_cell(row, col, model)} is not finite ({X[row, col]})")
    return X


def _load_npy(file: Path) -> np.ndarray:
    # The header is read first: its dtype must be numbers (an object array would need pickle) and the
    # size it claims must be in the file, so a 100-byte file cannot make numpy allocate terabytes.
    try:
        with open(file, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f".npy format version {version} is not supported (1.0 and 2.0 are)")
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read_header(fh)
            offset = fh.tell()
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        raise ModelFileError(file, None, f"cannot be read as a .npy array: {exc}") from None
    if dtype.kind not in "iuf" or dtype.hasobject:
        raise ModelFileError(file, None, f"data must be an array of real numbers, got dtype {dtype}")
    claimed = math.prod(shape) * dtype.itemsize
    available = file.stat().st_size - offset
    if claimed > available:
        raise ModelFileError(
            file, None, f"its header claims shape {shape} ({claimed} bytes) but the file holds {available} bytes"
        )
    try:
        X = np.load(file, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ModelFileError(file, None, f"cannot be read as a .npy array without pickle: {exc}") from None
    return np.asarray(X, dtype=np.float64)


def _load_csv(file: Path, model: Model | None) -> np.ndarray:
    """Rows of a CSV file. A header must name the model's coordinates (those columns are read, in the model's
    order; other columns are ignored); a header naming other columns is an error that names them. Errors give
    the file's line (counted from 1, as editors do) and the data's row and column (indices into X, from 0)."""
    with open(file, newline="", encoding="utf-8-sig", errors="replace") as fh:  # -sig: a BOM is not a name
        first = next(csv.reader(fh), None)
    if first is None:
        raise ModelFileError(file, None, "data file is empty")
    header = [h.strip() for h in first]
    has_header = not all(_is_number(h) for h in header)
    columns: list[int] | None = None
    if has_header and model is not None:
        names = model.data_names
        missing = [n for n in names if n not in header]
        if missing:
            others = [h for h in header if h not in names]
            raise ModelFileError(
                file,
                None,
                f"line 1: the header names columns {_clip_list(others)} that are not the model's coordinates "
                f"{names} (missing: {', '.join(missing)}); name the columns after the coordinates, or remove the "
                "header to read the columns by position",
            )
        columns = [header.index(n) for n in names]
    try:
        X = np.loadtxt(file, delimiter=",", skiprows=int(has_header), ndmin=2, usecols=columns, encoding="utf-8-sig")
    except ValueError:
        raise ModelFileError(file, None, _csv_problem(file, columns, model)) from None
    X = np.asarray(X, dtype=np.float64)
    bad = ~np.isfinite(X)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        line = _line_of_row(file, row, has_header)
        raise ModelFileError(
            file, None, f"line {line}: data value at {_cell(row, col, model)} is not finite ({X[row, col]})"
        )
    return X


def _cell(row: int, col: int, model: Model | None) -> str:
    """'row r, column c (name)': indices into X, counted from 0 (symsm's convention for data positions)."""
    name = f" ({model.data_names[col]})" if model is not None and col < model.dim else ""
    return f"row {row}, column {col}{name}"


def _clip_list(items: list[str], n: int = 10) -> str:
    return ", ".join(repr(i) for i in items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def _data_lines(file: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number from 1, cells) of every non-empty line, as np.loadtxt reads them."""
    with open(file, newline="", encoding="utf-8-sig", errors="replace") as fh:
        for line, cells in enumerate(csv.reader(fh), start=1):
            if cells and any(c.strip() for c in cells):
                yield line, cells


def _line_of_row(file: Path, row: int, has_header: bool) -> int:
    for k, (line, _) in enumerate(_data_lines(file)):
        if k == row + int(has_header):
            return line
    return 0


def _csv_problem(file: Path, columns: list[int] | None, model: Model | None) -> str:
    """Where a CSV file stops being numbers: the first cell that is not one, or the first line of another width."""
    width: int | None = None
    row = -1
    for line, cells in _data_lines(file):
        if line == 1 and not all(_is_number(c.strip()) for c in cells):
            continue  # the header
        row += 1
        picked = (
            [(i, cells[c] if c < len(cells) else None) for i, c in enumerate(columns)]
            if columns
            else [*enumerate(cells)]
        )
        for col, cell in picked:
            if cell is None or not _is_number(cell.strip()):
                shown = "nothing" if cell is None else repr(cell.strip())
                return f"line {line}: {_cell(row, col, model)} is {shown}, not a number"
        if width is None:
            width = len(cells)
        elif len(cells) != width and columns is None:
            return f"line {line}: {_cell(row, 0, None).split(',')[0]} has {len(cells)} columns, the first row {width}"
    return "cannot be read as comma-separated numbers"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_bytes(file: Path, limit: int, what: str) -> bytes:
    try:
        size = file.stat().st_size
        if size > limit:
            raise ModelFileError(file, None, f"{what} is {size} bytes; the limit is {limit}")
        with open(file, "rb") as fh:
            raw = fh.read(limit + 1)
    except OSError as exc:
        raise ModelFileError(file, None, f"cannot be read: {exc.strerror or exc}") from None
    if len(raw) > limit:
        raise ModelFileError(file, None, f"{what} is larger than the limit {limit} bytes")
    return raw
