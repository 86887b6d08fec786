"""Which videos to preprocess and their captions (`--videos`).

Accepted layouts:
- FastVideo's merged layout: a JSON file (or a directory holding `videos2caption.json`) with a list of
  entries {"path": "clip.mp4", "cap": "a caption" | ["caption", "another", ...], ...}. Relative paths are
  looked up in the `videos/` folder beside the JSON file (FastVideo's layout), then beside the JSON file
  itself. Other entry fields (resolution, fps, duration, ...) are ignored: the video file is the truth.
  "caption" is accepted in place of "cap".
- FastVideo's raw layout: a directory with `videos.txt` (one video file name per line, in `videos/`) and
  `prompt.txt` (the caption on the same line number).
- A plain directory of videos (searched recursively) with each caption in a .txt file of the same name
  beside its video (clip.mp4 + clip.txt).

Every video gets a stable id (its path relative to the layout's root, without the extension; a repeated
video gets "#2", "#3", ...), which is what a resumed run uses to recognise finished work.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random

from fvjax.errors import UserError

FLAG = "--videos"
MERGED_JSON = "videos2caption.json"
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")


@dataclasses.dataclass(frozen=True)
class InputItem:
    index: int                # position in the input list
    id: str                   # stable name (see module doc)
    path: str                 # the video file
    captions: tuple[str, ...]  # one is chosen per video (deterministically, see pick_caption)
    problem: str | None = None  # why it cannot be used (missing file, no caption), logged as a skip


def list_inputs(videos: str) -> list[InputItem]:
    if not os.path.exists(videos):
        raise UserError(FLAG, None, f"{videos} does not exist; give a videos2caption.json file or a directory "
                                    f"of videos")
    if os.path.isfile(videos):
        if not videos.endswith(".json"):
            raise UserError(FLAG, None, f"{videos} is a file but not a .json caption list; give FastVideo's "
                                        f"{MERGED_JSON} or a directory of videos")
        items = _from_merged_json(videos)
    elif os.path.isfile(os.path.join(videos, MERGED_JSON)):
        items = _from_merged_json(os.path.join(videos, MERGED_JSON))
    elif os.path.isfile(os.path.join(videos, "videos.txt")) and os.path.isfile(os.path.join(videos, "prompt.txt")):
        items = _from_raw_lists(videos)
    else:
        items = _from_directory(videos)
    if not items:
        raise UserError(FLAG, None, f"no videos found in {videos} (looked for {MERGED_JSON}, videos.txt + "
                                    f"prompt.txt, and {', '.join(VIDEO_EXTENSIONS)} files)")
    return _unique_ids(items)


def _from_merged_json(json_path: str) -> list[InputItem]:
    try:
        with open(json_path, encoding="utf-8") as f:
            entries = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(json_path, None, f"cannot read the caption list: {err}")
    if not isinstance(entries, list):
        raise UserError(json_path, None, 'expected a JSON list of {"path": ..., "cap": ...} entries')
    root = os.path.dirname(os.path.abspath(json_path))
    videos_dir = os.path.join(root, "videos")
    items = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not entry["path"]:
            raise UserError(json_path, f"[{i}].path", "each entry needs a non-empty string path")
        captions = entry.get("cap", entry.get("caption"))
        if isinstance(captions, str):
            captions = [captions]
        if not isinstance(captions, list) or not captions or not all(isinstance(c, str) for c in captions):
            raise UserError(json_path, f"[{i}].cap",
                            "each entry needs a caption: a string or a non-empty list of strings")
        rel = entry["path"]
        if os.path.isabs(rel):
            path = rel
        else:
            in_videos = os.path.join(videos_dir, rel)
            path = in_videos if os.path.exists(in_videos) else os.path.join(root, rel)
        problem = (None if os.path.isfile(path)
                   else f"video file not found (looked for {rel} in {videos_dir} and {root})")
        items.append(InputItem(index=i, id=_strip_ext(os.path.normpath(rel)), path=path,
                               captions=tuple(captions), problem=problem))
    return items


def _from_raw_lists(root: str) -> list[InputItem]:
    names = _lines(os.path.join(root, "videos.txt"))
    prompts = _lines(os.path.join(root, "prompt.txt"))
    if len(names) != len(prompts):
        raise UserError(os.path.join(root, "prompt.txt"), None,
                        f"has {len(prompts)} lines but videos.txt has {len(names)}; one caption per video")
    items = []
    for i, (name, prompt) in enumerate(zip(names, prompts)):
        path = os.path.join(root, "videos", name)
        problem = None if os.path.isfile(path) else f"video file not found: {path}"
        items.append(InputItem(index=i, id=_strip_ext(name), path=path, captions=(prompt,), problem=problem))
    return items


def _from_directory(root: str) -> list[InputItem]:
    found = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in files:
            if name.lower().endswith(VIDEO_EXTENSIONS) and not name.startswith("."):
                found.append(os.path.relpath(os.path.join(directory, name), root))
    items = []
    for i, rel in enumerate(sorted(found)):
        path = os.path.join(root, rel)
        caption_file = _strip_ext(path) + ".txt"
        try:
            with open(caption_file, encoding="utf-8") as f:
                captions, problem = (f.read().strip(),), None
        except FileNotFoundError:
            captions, problem = (), f"no caption: expected {os.path.basename(caption_file)} beside the video"
        except (OSError, UnicodeDecodeError) as err:
            captions, problem = (), f"cannot read the caption file {caption_file}: {err}"
        items.append(InputItem(index=i, id=_strip_ext(rel), path=path, captions=captions, problem=problem))
    return items


def _unique_ids(items: list[InputItem]) -> list[InputItem]:
    seen: dict[str, int] = {}
    out = []
    for item in items:
        seen[item.id] = seen.get(item.id, 0) + 1
        if seen[item.id] > 1:
            item = dataclasses.replace(item, id=f"{item.id}#{seen[item.id]}")
        out.append(item)
    return out


def _lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(path, None, f"cannot read: {err}")


def _strip_ext(path: str) -> str:
    return os.path.splitext(path)[0].replace(os.sep, "/")


def pick_caption(item: InputItem, seed: int) -> str:
    """One of the item's captions, FastVideo-style random choice, but a pure function of (seed, id) so a
    resumed run picks the same caption whatever was processed before."""
    if len(item.captions) == 1:
        return item.captions[0]
    return random.Random(f"{seed}:{item.id}").choice(item.captions)
