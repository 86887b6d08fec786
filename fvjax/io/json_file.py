"""Reading a JSON file a user handed us (a config.json, an index), with one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

from fvjax.errors import fail


def read_json(path: str | Path, key: str | None = None) -> object:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        fail(path, key, "file not found")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        fail(path, key, f"invalid JSON ({e}); the file is damaged, re-download or re-create it")
