"""Reading a specialist's raw data: ``package://``, a local file, ``hf://`` or ``s3://``.

Every source becomes a frame of strings with the columns the specialist's kind asks for, plus ``row``
(the 1-based row number in the source), so that each quarantined row can be traced back. Errors name
the source and what is wrong with it.
"""

from __future__ import annotations

import codecs
import importlib.util
import io
import json
import re
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd

from fleet.core.sections import DataSpec
from fleet.core.storage import StorageError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
MAX_FIELD_CHARS = 1_000_000  # longer: a quote left open swallowed the file, or binary data
BAD_BYTES = "\U0010fffd"  # private-use sentinel for bytes that do not decode (never valid input text)


class CurationError(ValueError):
    """The data cannot be curated; the message names the source and the problem."""


def format_of(source: str, declared: str) -> str:
    if declared != "auto":
        return declared
    suffix = Path(urlparse(source).path).suffix.lower()
    fmt = FORMATS.get(suffix)
    if fmt is None:
        raise CurationError(f"{source}: cannot tell the format from {suffix or 'no extension'!r}; set data.format")
    return fmt


def resolve_package(source: str) -> Path:
    """``package://PKG/PATH`` -> the file inside the installed package ``PKG``."""
    rest = source[len("package://") :]
    pkg, _, sub = rest.partition("/")
    if not pkg or not sub:
        raise CurationError(f"{source}: expected package://PACKAGE/PATH/IN/PACKAGE")
    # find_spec locates a top-level package without running its __init__ (some data packages no longer import)
    found = importlib.util.find_spec(pkg) if "." not in pkg else None
    if found is None or not found.submodule_search_locations:
        raise CurationError(f"{source}: Python package {pkg!r} is not installed (is the 'demo' extra installed?)")
    path = Path(next(iter(found.submodule_search_locations))) / sub
    if not path.is_file():
        raise CurationError(f"{source}: no file {sub!r} in package {pkg!r} ({path})")
    return path


def check_source(data: DataSpec) -> None:
    """Fail early, before any work, when a local or packaged source is missing."""
    src = data.source
    if src.startswith("package://"):
        resolve_package(src)
    elif src.startswith("hf://"):
        if not src[len("hf://") :]:
            raise CurationError(f"{src}: expected hf://DATASET_NAME_OR_SAVED_FOLDER")
    elif src.startswith("s3://"):
        if not urlparse(src).netloc or not urlparse(src).path.strip("/"):
            raise CurationError(f"{src}: expected s3://BUCKET/KEY")
    elif "://" in src:
        raise CurationError(f"{src}: unsupported scheme (use package://, hf://, s3:// or a local path)")
    elif not Path(src).exists():
        raise CurationError(f"{src}: data file not found")


def _mark_bad_bytes(exc: UnicodeError) -> tuple[str, int]:
    assert isinstance(exc, UnicodeDecodeError)
    return BAD_BYTES, exc.end


codecs.register_error("fleet-mark-bad-bytes", _mark_bad_bytes)


def decode(raw: bytes, encoding: str, source: str) -> str:
    """Decode; undecodable bytes become BAD_BYTES so that cleaning quarantines their rows ("invalid-encoding")."""
    try:
        return raw.decode(encoding, errors="fleet-mark-bad-bytes")
    except LookupError:
        raise CurationError(f"{source}: unknown encoding {encoding!r} in data.encoding") from None


def json_objects(text: str, source: str, error: type[Exception] = CurationError) -> list[dict]:
    """The JSON object on each non-blank line of ``text``; a line that is not one raises ``error`` naming
    ``source`` and the line (data files: ``CurationError``; the store's own log parts: ``StorageError``)."""
    rows = []
    for i, line in enumerate(text.split("\n"), 1):  # not splitlines: U+2028 and kin sit inside strings
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{source}: line {i} is not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise error(f"{source}: line {i} is not a JSON object")
        rows.append(obj)
    return rows


def parse_bytes(raw: bytes, fmt: str, data: DataSpec, source: str) -> pd.DataFrame:
    if not raw.strip():
        raise CurationError(f"{source}: the file is empty")
    try:
        if fmt == "parquet":
            return pd.read_parquet(io.BytesIO(raw)).astype(object)
        if fmt == "jsonl":
            return pd.DataFrame(json_objects(decode(raw, data.encoding, source), source), dtype=object)
        return pd.read_csv(
            io.StringIO(decode(raw, data.encoding, source)),
            sep="\t" if fmt == "tsv" else ",",
            header=0 if data.header else None,
            names=None if data.header else data.names,
            dtype=str,
            keep_default_na=False,
            quoting=3 if fmt == "tsv" else 0,  # TSV: quotes are text, not delimiters
            on_bad_lines="error",
        )
    except CurationError:
        raise
    except Exception as exc:  # pandas/pyarrow parse errors: name the file and the format
        raise CurationError(f"{source}: not a valid {fmt} file: {exc}") from None


def read_bytes(data: DataSpec) -> bytes:
    """The source file's bytes (local, packaged or S3)."""
    src = data.source
    if src.startswith("s3://"):
        return _read_s3(src)
    path = resolve_package(src) if src.startswith("package://") else Path(src)
    if path.is_dir():
        raise CurationError(f"{src}: is a folder; name a file")
    return path.read_bytes()


def load_frame(data: DataSpec, raw: bytes | None = None) -> pd.DataFrame:
    """The whole source as a frame (all columns); ``raw`` saves reading a file that was read already."""
    check_source(data)
    if data.source.startswith("hf://"):
        return _load_hf(data.source[len("hf://") :], data.hf_split)
    fmt = format_of(data.source, data.format)
    return parse_bytes(read_bytes(data) if raw is None else raw, fmt, data, data.source)


_HEADER_NAME = re.compile(r"[\w .()/-]{1,40}")


def _column_names(names) -> str:
    """The file's column names for an error message, only when they look like a header: a file that has
    none (or is not data at all, say a symlink to a system file) would have its first line printed."""
    shown = [str(n) for n in names]
    if not shown:
        return "none"
    if len(shown) <= 20 and all(_HEADER_NAME.fullmatch(n) for n in shown):
        return ", ".join(shown)
    return f"{len(shown)} column(s) whose first row does not look like a header (not shown)"


def select_columns(df: pd.DataFrame, columns: dict[str, str], source: str) -> pd.DataFrame:
    """``columns`` maps our names to the source's; the result has ours and ``row``."""
    missing = [c for c in columns.values() if c not in df.columns]
    if missing:
        # the names only when the file has one of the columns asked for (a data file meant for this): a file
        # that has none may be anything (a symlink to a system file), and its first line is never printed
        found = len(missing) < len(set(columns.values()))
        have = (
            _column_names(df.columns) if found else f"{len(df.columns)} column(s), none of them asked for (not shown)"
        )
        setting = " / ".join(f"data.{ours}_column" for ours in columns)
        raise CurationError(f"{source}: missing column(s) {', '.join(missing)}; the file has {have} (set {setting})")
    out = pd.DataFrame({ours: df[theirs].tolist() for ours, theirs in columns.items()})
    out["row"] = range(1, len(df) + 1)
    if out.empty:
        raise CurationError(f"{source}: no data rows")
    for ours in columns:
        sizes = out[ours].map(lambda v: len(v) if isinstance(v, str) else 0)
        if len(sizes) and sizes.max() > MAX_FIELD_CHARS:
            row = int(out["row"].iloc[int(sizes.argmax())])
            raise CurationError(
                f"{source}: row {row}: {columns[ours]} is {sizes.max():,} characters long (the limit "
                f"is {MAX_FIELD_CHARS:,}): a quote left open, or binary data?"
            )
    return out


def load_raw(data: DataSpec, columns: dict[str, str] | None = None) -> pd.DataFrame:
    """The source as a frame of ``columns`` (default: text and label) and ``row``."""
    columns = columns or {"text": data.text_column, "label": data.label_column}
    return select_columns(load_frame(data), columns, data.source)


def _read_s3(src: str) -> bytes:
    from fleet.core.storage import S3Store

    parsed = urlparse(src)
    try:
        return S3Store(f"s3://{parsed.netloc}").get_bytes(parsed.path.lstrip("/"))
    except StorageError as exc:
        raise CurationError(str(exc)) from None


def _load_hf(name: str, split: str) -> pd.DataFrame:
    import datasets

    try:
        ds = datasets.load_from_disk(name) if Path(name).exists() else datasets.load_dataset(name, split=split)
    except Exception as exc:
        raise CurationError(f"hf://{name}: cannot load the data set: {exc}") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise CurationError(f"hf://{name}: no split {split!r} (has {', '.join(ds)}); set data.hf_split")
        ds = ds[split]
    return ds.to_pandas().astype(object)
