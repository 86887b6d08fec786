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

Integrity: each checkpoint carries `<step>/fvjax_checksums.json` (fvjax.io.checksums: every file's size and
CRC-32s), written by process 0 once every process's files are complete and before orbax renames the
temporary directory into place, so a finalized checkpoint has its list (an async save computes it in the
background). Restoring verifies it first; `resolve_resume` falls back from a corrupt newest checkpoint to
the newest one that verifies (the training loop says so and renames the corrupt ones `<step>.corrupt`, so
the run can save those steps again). A checkpoint without a list (older fvjax) is used unverified,
said once on stderr.
"""
from __future__ import annotations

import glob
import json
import os
import re
import sys
import time
from typing import Any, NamedTuple

import jax
import orbax.checkpoint as ocp

from fvjax.errors import UserError
from fvjax.io import checksums

CHECKPOINTS_SUBDIR = "checkpoints"
RESUME_FLAG = "--resume-from-checkpoint"
_ITEMS = ("state", "data", "meta")
# Orbax rewrites its step metadata when it commits (after the checksum list is written): listed by name.
_NAMES_ONLY = ("_CHECKPOINT_METADATA",)


class Restored(NamedTuple):
    step: int
    state: Any             # the pytree, placed as the abstract target asked
    data_state: dict | None
    recipe_text: str | None
    metadata: dict         # the whole meta JSON (step, recipe_text, versions, extra fields)


class ResumePoint(NamedTuple):
    root: str   # a checkpoints directory (<output_dir>/checkpoints)
    step: int
    skipped: tuple[tuple[int, str], ...] = ()   # newer checkpoints that failed their checksums: (step, why)
    verified: bool = True   # False: the checkpoint has no checksum list (older fvjax); it was not checked

    @property
    def path(self) -> str:
        return os.path.join(self.root, str(self.step))

    def fallback_note(self, moved: list[str] | None = None) -> str | None:
        """The line saying which newer checkpoints were skipped and why (None when none was); `moved`: where
        they were set aside (Checkpointer.set_aside)."""
        if not self.skipped:
            return None
        aside = f" (set aside as {', '.join(os.path.basename(m) for m in moved)})" if moved else ""
        if len(self.skipped) == 1:
            (step, why), = self.skipped
            return (f"checkpoint {step} in {self.root} is corrupt ({why}); resuming from checkpoint "
                    f"{self.step}{aside}")
        steps = ", ".join(str(s) for s, _ in self.skipped)
        whys = "; ".join(f"{s}: {why}" for s, why in self.skipped)
        return (f"checkpoints {steps} in {self.root} are corrupt ({whys}); resuming from checkpoint "
                f"{self.step}{aside}")


def checkpoint_root(output_dir: str) -> str:
    return os.path.join(os.fspath(output_dir), CHECKPOINTS_SUBDIR)


class Checkpointer:
    """Saves every `interval_steps` steps (0 = only when forced), keeps the newest `total_limit`
    (0 = all). `root` is <output_dir>/checkpoints, or any checkpoints directory."""

    def __init__(self, root: str, interval_steps: int = 0, total_limit: int = 0, async_save: bool = True,
                 read_only: bool = False, checksum: bool = True):
        self.root = os.path.abspath(os.fspath(root))
        self.interval_steps = interval_steps
        self._checksums = checksum and not read_only   # False: no checksum lists (the cost benchmark)
        self._async = async_save
        self._saving: int | None = None   # the step whose async save is in flight
        async_options = (ocp.AsyncOptions(post_finalization_callback=self._write_checksums)
                         if async_save and self._checksums else None)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=total_limit if total_limit and total_limit > 0 else None,
            enable_async_checkpointing=async_save, create=not read_only, read_only=read_only,
            async_options=async_options)
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
        self._manager.wait_until_finished()   # orbax waits here too; then the callback is the previous save's
        self._saving = int(step)
        saved = bool(self._manager.save(int(step), args=args, force=True))
        if saved and self._checksums and not self._async and jax.process_index() == 0:
            checksums.write(self.step_path(step), _NAMES_ONLY)   # finalized when a sync save returns
        return saved

    def _write_checksums(self) -> None:
        """Orbax's post-finalization callback (process 0, background thread): every process's files of
        the step being saved are complete in its temporary directory, which is renamed right after. A
        failure here is reported, not raised: the checkpoint stays usable (unverified)."""
        step = self._saving
        try:
            pending = [d for d in glob.glob(os.path.join(self.root, f"{step}.orbax-checkpoint-tmp*"))
                       if os.path.isdir(d)]
            target = max(pending, key=os.path.getmtime) if pending else self.step_path(step)
            checksums.write(target, _NAMES_ONLY)
        except Exception as err:  # noqa: BLE001  (disk full, permissions: the save itself succeeded)
            print(f"fvjax: warning: could not write the checksum list of checkpoint {step} in {self.root} "
                  f"({type(err).__name__}: {err}); it will be restored unverified", file=sys.stderr)

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

    def latest_sound_step(self) -> int | None:
        """The newest checkpoint that verifies (or has no checksum list to verify), None if none does."""
        for step in reversed(self.all_steps()):
            if _check(self.root, step)[0] is not None:
                return step
        return None

    def set_aside(self, steps) -> list[str]:
        """Rename checkpoints `steps` (corrupt ones a resumed run skipped) to `<step>.corrupt`, out of
        orbax's sight, so this run can save those steps again; returns the new names (on process 0, which
        renames; every process calls it)."""
        moved = []
        for step in sorted(steps) if jax.process_index() == 0 else ():
            src, dst = self.step_path(step), self.step_path(step) + ".corrupt"
            n = 1
            while os.path.exists(dst):
                dst, n = f"{self.step_path(step)}.corrupt-{n}", n + 1
            if os.path.isdir(src):
                os.rename(src, dst)
                moved.append(dst)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("fvjax checkpoints set aside")
        self._manager.reload()
        return moved

    def step_path(self, step: int) -> str:
        return os.path.join(self.root, str(int(step)))

    def verify(self, step: int) -> bool:
        """True: checkpoint `step` matches its checksum list; False: it has none (said once on stderr);
        a corrupt checkpoint is a UserError naming the bad file."""
        verified, why = _check(self.root, step)
        if verified is None:
            raise UserError(self.step_path(step), None, f"is corrupt ({why}); resume from another checkpoint "
                            "('latest' takes the newest one that verifies)")
        if not verified:
            checksums.note_unverified(self.step_path(step), f"checkpoint {step} in {self.root}")
        return verified

    def restore(self, step: int, abstract_state: Any = None, *, verify: bool = True) -> Restored:
        """Restore checkpoint `step`. `abstract_state` is a pytree of jax.ShapeDtypeStruct carrying the
        target shardings (e.g. from eval_shape + the mesh rules): arrays come back exactly as saved,
        laid out as asked. None restores every array whole onto this process's first device, whatever
        topology wrote it (for inspection / export). The checksums are verified first (`verify=False`:
        the caller did, e.g. through resolve_resume)."""
        if step not in self.all_steps():
            raise UserError(RESUME_FLAG, None, f"no finalized checkpoint {step} in {self.root}")
        verified = self.verify(step) if verify else checksums.has_list(self.step_path(step))
        try:
            if abstract_state is None:
                abstract_state = self._on_one_device(step)
            else:
                self._check_compatible(step, abstract_state)
            state_args = ocp.args.StandardRestore(abstract_state)
            out = self._manager.restore(int(step), args=ocp.args.Composite(
                state=state_args, data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()))
        except UserError:
            raise
        except Exception as err:
            if verified:
                raise   # the files are as saved: not damage, a bug or a resource problem
            # Without a checksum list, damage shows up as whatever orbax or tensorstore raises.
            raise UserError(self.step_path(step), None, f"cannot be read ({type(err).__name__}: "
                            f"{' '.join(str(err).split())[:200]}); it has no checksum list and may be damaged: "
                            "resume from another checkpoint") from None
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


def _check(root: str, step: int) -> tuple[bool | None, str | None]:
    """(True, None): checkpoint `step` verifies; (False, None): it has no checksum list; (None, why): it
    is corrupt. With several JAX processes every one must call this (they share the reading)."""
    try:
        return checksums.verify(os.path.join(root, str(int(step)))), None
    except checksums.Corrupt as bad:
        return None, str(bad)


def _newest_sound(root: str, steps: list[int]) -> ResumePoint:
    """The newest of `steps` that verifies (or has no list), saying which newer ones were skipped; a
    UserError when every one is corrupt."""
    skipped = []
    for step in reversed(steps):
        verified, why = _check(root, step)
        if verified is None:
            skipped.append((step, why))
            continue
        point = ResumePoint(os.path.abspath(root), step, tuple(skipped), verified)
        if not verified:
            checksums.note_unverified(point.path, f"checkpoint {step} in {point.root}")
        return point
    whys = "; ".join(f"{s}: {why}" for s, why in skipped)
    raise UserError(RESUME_FLAG, None, f"no checkpoint in {root} verifies, every one is corrupt ({whys}); "
                                       "start a new output_dir or give a checkpoint saved elsewhere")


def resolve_resume(arg: str | None, output_dir: str | None = None) -> ResumePoint | None:
    """`--resume-from-checkpoint` / `training.resume_from_checkpoint` -> where to resume, or None.

    - "" / None: start fresh (None).
    - "latest": the newest finalized checkpoint under output_dir that verifies (corrupt newer ones are
      skipped: the point's `skipped` and `fallback_note()`), or None when there is none (the caller says
      "no checkpoint in <dir>; starting from scratch", as FastVideo main does).
    - a step directory (<root>/<step>, e.g. out/checkpoints/500): exactly that step; it must be finalized
      and verify.
    - a checkpoints directory or an output_dir: its newest finalized checkpoint that verifies.
    Anything else, or checkpoints that are all corrupt, is a UserError naming the flag and the path. The
    returned point has been verified (restore it with verify=False)."""
    if not arg:
        return None
    if arg == "latest":
        if output_dir is None:
            raise UserError(RESUME_FLAG, None, "'latest' needs training.output_dir to look in")
        root = checkpoint_root(output_dir)
        steps = _finalized_steps(root)
        return _newest_sound(root, steps) if steps else None
    path = os.path.abspath(os.path.expanduser(arg))
    if not os.path.exists(path):
        raise UserError(RESUME_FLAG, None, f"{arg} does not exist")
    for root in (os.path.join(path, CHECKPOINTS_SUBDIR), path):
        steps = _finalized_steps(root)
        if steps:
            return _newest_sound(root, steps)
    parent, step = os.path.dirname(path), _step_of(os.path.basename(path))
    if step is not None and os.path.isdir(path):
        if step in _finalized_steps(parent):
            verified, why = _check(parent, step)
            if verified is None:
                raise UserError(RESUME_FLAG, None, f"{arg} is corrupt ({why}); give another checkpoint, or "
                                                   "'latest' for the newest one that verifies")
            if not verified:
                checksums.note_unverified(path, f"checkpoint {step} in {parent}")
            return ResumePoint(parent, step, (), verified)
        raise UserError(RESUME_FLAG, None, f"{arg} is not a finalized checkpoint (an interrupted save?); "
                                           f"use another step or 'latest'")
    raise UserError(RESUME_FLAG, None, f"no finalized checkpoint in {arg}; give a checkpoint step directory "
                                       f"(<output_dir>/checkpoints/<step>), a checkpoints directory, an "
                                       f"output_dir, or 'latest'")


def describe_no_checkpoint(output_dir: str) -> str:
    return f"no finalized checkpoint in {checkpoint_root(output_dir)}; starting from scratch"
