"""Validation prompt files, read as FastVideo reads them (fastvideo_v3_recipes.md §5.5).

The format comes from the exact, case-sensitive suffix:
- `.json`: one object whose `data` key holds a list of records, `{"data": [{"caption": ...}, ...]}`. Trailing
  commas before `}` or `]` are accepted (FastVideo's parser, pandas' ujson, tolerates them and FastVideo's
  own validation_4.json has them). fvjax also accepts a bare top-level list of such records or of strings.
- `.csv`: a header row and a `caption` column.
- `.parquet` / `.arrow` (Arrow IPC, as `datasets` writes it): a `caption` column.
- `.txt` (fvjax only): one prompt per line, blank lines skipped.
Every record needs a non-empty caption. Any bad file is one `UserError` line naming the file and what to fix.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Callable

from fvjax.errors import UserError, fail

SHAPE = "{\"data\": [{\"caption\": ...}, ...]}"


def read_prompts(path: str, where: object, key: str = "training.validation_dataset_file") -> list[str]:
    """The captions of the prompt file at `path`, in order. `where`/`key` name the recipe setting that gave
    the path (for a missing file or an unknown suffix); problems inside the file name the file."""
    file = Path(path).expanduser()
    if not os.path.isfile(file):   # (os.path: False, not an error, for a name too long or with a NUL byte)
        what = "is a directory" if os.path.isdir(file) else "does not exist"
        fail(where, key, f"{path!r} {what} (a prompt file: JSON {SHAPE}, CSV or Parquet/Arrow with a caption "
             "column, or .txt with one prompt per line)")
    reader = _READERS.get(file.suffix)
    if reader is None:
        fail(where, key, f"{path!r}: unknown prompt file type {file.suffix or '(no suffix)'!r}; the suffix must be "
             f"one of {', '.join(_READERS)} (case-sensitive, as FastVideo)")
    try:
        captions = reader[1](file, key)
    except OSError as err:
        fail(file, key, f"cannot read it ({err.strerror or err})")
    except UnicodeDecodeError as err:
        fail(file, key, f"is not UTF-8 text (byte {err.start}: {err.reason}); save it as UTF-8")
    prompts = [_check(file, label, caption) for label, caption in captions]
    if not prompts:
        fail(file, key, "holds no prompts")
    return prompts


def prompt_format(path: str) -> str | None:
    """The format name for the file's suffix (e.g. "JSON"), or None when fvjax does not read that suffix."""
    reader = _READERS.get(Path(path).suffix)
    return reader[0] if reader else None


def count_prompts(path: str) -> int:
    """How many prompts the file holds (UserError when it does not read)."""
    return len(read_prompts(path, path))


def describe_prompts(path: str) -> str | None:
    """`N prompts from <file> (<format>)` for the dry-run plan, or None when the file is unset or does not
    read (preflight reports why)."""
    if not path:
        return None
    try:
        n = count_prompts(path)
    except UserError:
        return None
    return f"{n} prompt{'s' if n != 1 else ''} from {path} ({prompt_format(path)})"


def _check(file: Path, label: str, caption: object) -> str:
    if caption is None or isinstance(caption, str) and not caption.strip():
        fail(file, label, "is empty or missing; every record needs a non-empty caption")
    if not isinstance(caption, str):
        fail(file, label, f"is {type(caption).__name__} {repr(caption)[:60]}; a caption must be text")
    return caption


# ---- JSON --------------------------------------------------------------------------------------------------

def strip_trailing_commas(text: str) -> str:
    """`text` with each comma that (past whitespace) closes an object or array replaced by a space, outside
    strings only, so that positions in later JSON errors still point into the file."""
    out = list(text)
    in_string = escaped = False
    pending = None          # index of the last comma outside a string, until a non-space follows it
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if ch in " \t\r\n":
            continue
        if ch in "}]" and pending is not None:
            out[pending] = " "
        pending = i if ch == "," else None
        if ch == '"':
            in_string = True
    return "".join(out)


def _read_json(file: Path, key: str) -> list[tuple[str, object]]:
    text = file.read_text(encoding="utf-8-sig")
    try:
        data = json.loads(strip_trailing_commas(text))
    except json.JSONDecodeError as err:
        hint = (f"; JSON Lines (one object per line) is not read: put the records in {SHAPE}"
                if err.msg == "Extra data" else f"; expected {SHAPE}")
        fail(file, key, f"invalid JSON: {err.msg} at line {err.lineno} column {err.colno}{hint}")
    if isinstance(data, dict):
        if "data" not in data:
            fail(file, key, f"has no \"data\" key (keys: {', '.join(map(str, data)) or 'none'}); expected {SHAPE}")
        records, prefix = data["data"], "data"
    else:
        records, prefix = data, ""
    if not isinstance(records, list):
        fail(file, key, f"{prefix or 'the top level'} is a JSON {_json_type(records)}; expected {SHAPE}")
    captions = []
    for i, record in enumerate(records):
        label = f"{prefix}[{i}].caption"
        if isinstance(record, dict):
            if "caption" not in record:
                fail(file, f"{prefix}[{i}]", f"has no \"caption\" key (keys: {', '.join(map(str, record)) or 'none'})")
            captions.append((label, record["caption"]))
        elif isinstance(record, str):
            captions.append((label, record))
        else:
            fail(file, f"{prefix}[{i}]", f"is a JSON {_json_type(record)}; expected a record {{\"caption\": ...}}")
    return captions


def _json_type(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)


# ---- CSV ---------------------------------------------------------------------------------------------------

def _read_csv(file: Path, key: str) -> list[tuple[str, object]]:
    rows = _csv_rows(file, key)
    if not rows:
        fail(file, key, "is empty; a CSV prompt file needs a header row with a caption column")
    header = rows[0][1]
    if "caption" not in header:
        fail(file, key, f"has no caption column (header: {', '.join(header) or 'empty'})")
    column = header.index("caption")
    captions = []
    for line, row in rows[1:]:
        if not any(cell.strip() for cell in row):
            continue        # blank lines are no records (as pandas)
        cell = row[column] if column < len(row) else ""
        captions.append((f"record {len(captions)} caption (line {line})", cell or None))   # empty cell: None
    return captions


def _csv_rows(file: Path, key: str) -> list[tuple[int, list[str]]]:
    """(first line, cells) of each row. Lenient as pandas (`"a"b` is `ab`), except a quote left open at the end."""
    text = file.read_text(encoding="utf-8-sig")
    reader = csv.reader(io.StringIO(text, newline=""))
    rows, line = [], 1
    try:
        for row in reader:
            rows.append((line, row))
            line = reader.line_num + 1
    except csv.Error as err:
        fail(file, key, f"invalid CSV at line {line}: {err}")
    try:
        list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as err:
        if "end of data" in str(err):
            fail(file, key, f"invalid CSV: the quoted field of the row at line {rows[-1][0]} is never closed")
    return rows


# ---- Parquet / Arrow ---------------------------------------------------------------------------------------

def _read_parquet(file: Path, key: str) -> list[tuple[str, object]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        _caption_column(file, key, pq.read_schema(file))
        table = pq.read_table(file, columns=["caption"])
    except pa.ArrowException as err:
        fail(file, key, f"is not a readable Parquet file ({_first_line(err)})")
    return _captions(table)


def _read_arrow(file: Path, key: str) -> list[tuple[str, object]]:
    import pyarrow as pa

    try:
        with pa.memory_map(str(file)) as source:
            try:
                table = pa.ipc.open_stream(source).read_all()       # what `datasets` writes
            except pa.ArrowInvalid:
                source.seek(0)
                table = pa.ipc.open_file(source).read_all()
            _caption_column(file, key, table.schema)
            return _captions(table)                                 # read before the map closes
    except pa.ArrowException as err:
        fail(file, key, f"is not a readable Arrow IPC file, stream or file format ({_first_line(err)})")


def _caption_column(file: Path, key: str, schema) -> None:
    if "caption" not in schema.names:
        fail(file, key, f"has no caption column (columns: {', '.join(schema.names) or 'none'})")
    if schema.names.count("caption") > 1:
        fail(file, key, "has more than one caption column")


def _captions(table) -> list[tuple[str, object]]:
    return [(f"record {i} caption", caption) for i, caption in enumerate(table.column("caption").to_pylist())]


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


# ---- text --------------------------------------------------------------------------------------------------

def _read_text(file: Path, key: str) -> list[tuple[str, object]]:
    lines = file.read_text(encoding="utf-8-sig").splitlines()
    return [(f"line {n}", line.strip()) for n, line in enumerate(lines, 1) if line.strip()]


_READERS: dict[str, tuple[str, Callable[[Path, str], list[tuple[str, object]]]]] = {
    ".json": ("JSON", _read_json),
    ".csv": ("CSV", _read_csv),
    ".parquet": ("Parquet", _read_parquet),
    ".arrow": ("Arrow", _read_arrow),
    ".txt": ("text, one prompt per line", _read_text),
}
