"""Training-state checkpoints: a thin wrapper over orbax's CheckpointManager (V0 API, async saves).

Layout under the run's output_dir:

    <output_dir>/checkpoints/<step>/state/   the trainable roles' pytree (params, optimizer state, EMA,
                                             step), sharded arrays written by every process (orbax
                                             StandardSave; reshardable: restore onto any mesh)
    <output_dir>/checkpoints/<step>/data/    the data iterator's state (JSON, fvjax.data.DataIterator)
    <output_dir>/checkpoints/<step>/meta/    JSON: step, the recipe text, versions, anything the loop adds
    <output_dir>/checkpoints/<step>/_CHECKPOINT_METADATA   orbax's own

A save is written into a temporary `<step>.orbax-checkpoint-tmp-*` directory and renamed when complete
("finalized"); only finalized steps are ever listed, restored or resumed from. Frozen roles (the
teacher) are not saved: they are rebuilt from their weights. RNG needs no saving: keys come from
fold_in(seed, step).

Async: `save` returns once the arrays are copied to host memory (so the caller may donate the state to
the next step at once) and writes in the background; the next save waits for it; call
`wait_until_finished()` (or `close()`) before the process exits. Old checkpoints beyond
`total_limit` (0 = keep all; FastVideo's checkpoints_total_limit) are deleted after each save.
"""
from __future__ import annotations

import json
import os
import re
import time
from typing import Any, NamedTuple

import jax
import orbax.checkpoint as ocp

from fvjax.errors import UserError

CHECKPOINTS_SUBDIR = "checkpoints"
RESUME_FLAG = "--resume-from-checkpoint"
_ITEMS = ("state", "data", "meta")


class Restored(NamedTuple):
    step: int
    state: Any             # the pytree, placed as the abstract target asked
    data_state: dict | None
    recipe_text: str | None
    metadata: dict         # the whole meta JSON (step, recipe_text, versions, extra fields)


class ResumePoint(NamedTuple):
    root: str   # a checkpoints directory (<output_dir>/checkpoints)
    step: int

    @property
    def path(self) -> str:
        return os.path.join(self.root, str(self.step))


def checkpoint_root(output_dir: str) -> str:
    return os.path.join(os.fspath(output_dir), CHECKPOINTS_SUBDIR)


class Checkpointer:
    """Saves every `interval_steps` steps (0 = only when forced), keeps the newest `total_limit`
    (0 = all). `root` is <output_dir>/checkpoints, or any checkpoints directory."""

    def __init__(self, root: str, interval_steps: int = 0, total_limit: int = 0, async_save: bool = True,
                 read_only: bool = False):
        self.root = os.path.abspath(os.fspath(root))
        self.interval_steps = interval_steps
        options = ocp.CheckpointManagerOptions(
            max_to_keep=total_limit if total_limit and total_limit > 0 else None,
            enable_async_checkpointing=async_save, create=not read_only, read_only=read_only)
        self._manager = ocp.CheckpointManager(
            self.root, options=options, item_names=_ITEMS,
            item_handlers={"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler(),
                           "meta": ocp.JsonCheckpointHandler()})

    @classmethod
    def for_output_dir(cls, output_dir: str, **kwargs) -> "Checkpointer":
        return cls(checkpoint_root(output_dir), **kwargs)

    # ----------------------------------------------------------------------------- save

    def should_save(self, step: int) -> bool:
        return self.interval_steps > 0 and step > 0 and step % self.interval_steps == 0

    def save(self, step: int, state: Any, *, data_state: dict | None = None, recipe_text: str | None = None,
             metadata: dict | None = None) -> bool:
        """Start saving `state` (a pytree of arrays) as checkpoint `step`; False (and nothing written) if
        that step exists already, so a final or preemption save after a periodic one is harmless.
        Call it on every process (orbax coordinates the write)."""
        if step in self._manager.all_steps():
            return False
        meta = {"step": int(step), "recipe_text": recipe_text, "saved_at": time.time(),
                "jax_version": jax.__version__, "process_count": jax.process_count(), **(metadata or {})}
        args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  data=ocp.args.JsonSave(data_state if data_state is not None else {}),
                                  meta=ocp.args.JsonSave(_jsonable(meta)))
        return bool(self._manager.save(int(step), args=args, force=True))

    def wait_until_finished(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ----------------------------------------------------------------------------- query / restore

    def all_steps(self) -> list[int]:
        """Finalized steps, ascending (re-read from disk)."""
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    def restore(self, step: int, abstract_state: Any = None) -> Restored:
        """Restore checkpoint `step`. `abstract_state` is a pytree of jax.ShapeDtypeStruct carrying the
        target shardings (e.g. from eval_shape + the mesh rules): arrays come back exactly as saved,
        laid out as asked. None restores every array whole onto this process's first device, whatever
        topology wrote it (for inspection / export)."""
        if step not in self.all_steps():
            raise UserError(RESUME_FLAG, None, f"no finalized checkpoint {step} in {self.root}")
        if abstract_state is None:
            abstract_state = self._on_one_device(step)
        else:
            self._check_compatible(step, abstract_state)
        state_args = ocp.args.StandardRestore(abstract_state)
        out = self._manager.restore(int(step), args=ocp.args.Composite(
            state=state_args, data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()))
        meta = dict(out["meta"] or {})
        data_state = out["data"] or None
        return Restored(step=int(step), state=out["state"], data_state=data_state,
                        recipe_text=meta.get("recipe_text"), metadata=meta)


    def _check_compatible(self, step: int, abstract_state: Any) -> None:
        """A checkpoint of another experiment (other roles, architecture, optimizer, EMA) is refused in one
        line before anything is read, instead of failing inside orbax."""
        saved = _leaves(self._manager.item_metadata(step)["state"])
        wanted = _leaves(abstract_state)
        problems = [f"{k}: missing from the checkpoint" for k in wanted if k not in saved]
        problems += [f"{k}: in the checkpoint, not in this run" for k in saved if k not in wanted]
        problems += [f"{k}: saved {_shape(saved[k])}, this run {_shape(wanted[k])}" for k in wanted
                     if k in saved and saved[k] != wanted[k]]
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise UserError(os.path.join(self.root, str(step)), None, f"was saved by a different experiment: "
                            f"{problems[0]}{more}; resume with the recipe that wrote it (its meta/ holds it) or "
                            "start a new output_dir")

    def _on_one_device(self, step: int) -> Any:
        """The saved tree's shapes and dtypes, each leaf whole on this process's first device: a checkpoint
        written by any number of hosts and devices can be read here (inspection, export)."""
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        saved = self._manager.item_metadata(step)["state"]
        return jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device), saved)


def _leaves(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """{"student/params/blocks/...": (shape, dtype)}: paths by names only, so orbax's saved metadata (dicts)
    and the live state (dataclasses, named tuples) compare."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        names = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]
        out["/".join(names)] = (tuple(int(d) for d in leaf.shape), str(jax.numpy.dtype(leaf.dtype)))
    return out


def _shape(entry: tuple) -> str:
    shape, dtype = entry
    return f"{dtype}[{', '.join(map(str, shape))}]"


def _jsonable(value: Any) -> Any:
    """Metadata must survive JSON; anything else becomes its repr rather than failing a save."""
    return json.loads(json.dumps(value, default=repr))


def _step_of(name: str) -> int | None:
    """'123', 'checkpoint-123', 'checkpoint_123' -> 123."""
    match = re.fullmatch(r"(?:.*?[-_])?(\d+)", name)
    return int(match.group(1)) if match else None


def _finalized_steps(root: str) -> list[int]:
    if not os.path.isdir(root):
        return []
    return sorted(ocp.step.checkpoint_steps(root))


def resolve_resume(arg: str | None, output_dir: str | None = None) -> ResumePoint | None:
    """`--resume-from-checkpoint` / `training.resume_from_checkpoint` -> where to resume, or None.

    - "" / None: start fresh (None).
    - "latest": the newest finalized checkpoint under output_dir, or None when there is none (the
      caller says "no checkpoint in <dir>; starting from scratch", as FastVideo main does).
    - a step directory (<root>/<step>, e.g. out/checkpoints/500): exactly that step; it must be finalized.
    - a checkpoints directory or an output_dir: its newest finalized checkpoint.
    Anything else is a UserError naming the flag and the path."""
    if not arg:
        return None
    if arg == "latest":
        if output_dir is None:
            raise UserError(RESUME_FLAG, None, "'latest' needs training.output_dir to look in")
        root = checkpoint_root(output_dir)
        steps = _finalized_steps(root)
        return ResumePoint(os.path.abspath(root), steps[-1]) if steps else None
    path = os.path.abspath(os.path.expanduser(arg))
    if not os.path.exists(path):
        raise UserError(RESUME_FLAG, None, f"{arg} does not exist")
    for root in (os.path.join(path, CHECKPOINTS_SUBDIR), path):
        steps = _finalized_steps(root)
        if steps:
            return ResumePoint(root, steps[-1])
    parent, step = os.path.dirname(path), _step_of(os.path.basename(path))
    if step is not None and os.path.isdir(path):
        if step in _finalized_steps(parent):
            return ResumePoint(parent, step)
        raise UserError(RESUME_FLAG, None, f"{arg} is not a finalized checkpoint (an interrupted save?); "
                                           f"use another step or 'latest'")
    raise UserError(RESUME_FLAG, None, f"no finalized checkpoint in {arg}; give a checkpoint step directory "
                                       f"(<output_dir>/checkpoints/<step>), a checkpoints directory, an "
                                       f"output_dir, or 'latest'")


def describe_no_checkpoint(output_dir: str) -> str:
    return f"no finalized checkpoint in {checkpoint_root(output_dir)}; starting from scratch"
