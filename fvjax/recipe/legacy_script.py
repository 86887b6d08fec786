"""FastVideo's legacy launch scripts (`torchrun fastvideo/training/wan_*_pipeline.py --flag value ...`, spec
fastvideo_v3_recipes.md §8) read as the recipe they run, for `python -m fvjax.recipe upgrade`.

The script is read, not run: a small subset of bash is understood (assignments, `export`, arrays such as
`training_args=( --seed 1000 ... )` with comments, `$VAR` / `${VAR}` / `${VAR:-default}` / `"${array[@]}"`,
quotes, backslash continuations, `$(dirname "$0")`); everything else is skipped. The one `torchrun` (or
`python -m torch.distributed.run`, or `python <pipeline>.py`) line gives the pipeline and its flags.

The pipeline decides the method: wan_distillation_pipeline (or DMD flags) -> dmd2, wan_training_pipeline ->
finetune, self-forcing -> not implemented yet. The flags are TrainingArgs fields (FastVideo's flat names,
`-` and `_` alike), so they become the equivalent Phase 2 recipe, which fvjax's loader checks like any other,
with the legacy argparse defaults that differ from TrainingArgs' made explicit: seed 42, lr_warmup_steps 10,
EMA decay 0.999 (DMD), weighting_scheme uniform, mode_scale 1.29; flags declared without a default are None
there: no --max_grad_norm means no clipping, no --simulate_generator_forward the data_latent rollout, no
--tracker_project_name no tracker. The legacy finetune loop samples timesteps on an unshifted table
(flow_shift 1.0; --flow_shift only moves validation), and keeps no EMA. An attention backend the script
exports (FASTVIDEO_ATTENTION_BACKEND) that changes the model (sparse or quantised attention) is refused.
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Callable

import yaml

from fvjax.errors import UserError, fail
from fvjax.methods.registry import get_method
from fvjax.recipe.fastvideo_train.roles import CHANGING_BACKENDS
from fvjax.recipe.yamlio import read_text
from fvjax.schema.params import METHOD
from fvjax.schema.pipeline_config import PIPELINE_FIELDS
from fvjax.schema.recipe import Recipe
from fvjax.schema.training_args import TRAINING_FIELDS

SEP = "\x01"   # a command separator (; && || | & and redirections) among the words


def _unset(text: str) -> str:
    """A placeholder for what the reader cannot evaluate; an error only if a flag's value uses it."""
    return f"\x00{text}\x00"


def _backticks(text: str, i: int) -> tuple[int, str]:
    """A `command` substitution at text[i] (not run): (the index after it, its placeholder)."""
    k = text.find("`", i + 1)
    return (len(text) if k < 0 else k + 1), _unset(text[i:k + 1] if k > 0 else text[i:])


# ------------------------------------------------------------------------------------------- the bash subset

_ASSIGN = re.compile(r"^\s*(?:(?:export|declare|local|readonly|typeset)(?:\s+-\w+)*\s+)?([A-Za-z_]\w*)=(.*)$", re.S)
_ARRAY = re.compile(r"^\s*(?:(?:declare|local|typeset)(?:\s+-\w+)*\s+)?([A-Za-z_]\w*)=\((.*)$", re.S)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) with backslash-newline continuations joined."""
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, line in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        stripped = line.rstrip()
        trailing = len(stripped) - len(stripped.rstrip("\\"))
        if trailing % 2 == 1 and not stripped.lstrip().startswith("#"):
            pending += stripped[:-1]
            continue
        out.append((start, pending + line))
        pending = ""
    if pending:
        out.append((start, pending))
    return out


def _close_paren(text: str) -> int | None:
    """Index of the ')' closing an array's '(' (which precedes `text`), outside quotes and comments."""
    depth, i, word_start = 0, 0, True
    while i < len(text):
        ch = text[i]
        if ch == "'":
            j = text.find("'", i + 1)
            i = len(text) if j < 0 else j + 1
            word_start = False
            continue
        if ch == '"':
            j = i + 1
            while j < len(text) and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            i, word_start = j + 1, False
            continue
        if ch == "\\":
            i, word_start = i + 2, False
            continue
        if ch == "#" and word_start:
            j = text.find("\n", i)
            i = len(text) if j < 0 else j
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            if depth == 0:
                return i
            depth -= 1
        word_start = ch in " \t\n("
        i += 1
    return None


def _matching(text: str, i: int, open_: str, close: str) -> int:
    """Index of the `close` matching the `open_` at text[i] (quotes skipped), or -1."""
    depth, j = 0, i
    while j < len(text):
        ch = text[j]
        if ch in "'\"":
            k = text.find(ch, j + 1)
            j = len(text) if k < 0 else k + 1
            continue
        if ch == open_:
            depth += 1
        elif ch == close:
            depth -= 1
            if depth == 0:
                return j
        j += 1
    return -1


class _Shell:
    def __init__(self, path: Path):
        self.path = path
        self.vars: dict[str, str] = {}
        self.arrays: dict[str, list[str]] = {}

    # -- expansions
    def _var(self, name: str) -> str:
        if name in self.vars:
            return self.vars[name]
        if name in self.arrays:
            return self.arrays[name][0] if self.arrays[name] else ""
        return _unset(f"${name}")

    def _command(self, cmd: str) -> str:
        if re.fullmatch(r"\s*dirname\s+(\"?)\$(0|\{0\})\1\s*", cmd):
            return str(self.path.parent)
        return _unset(f"$({cmd.strip()})")

    def _brace(self, inner: str, line: int) -> str | list[str]:
        if m := re.fullmatch(r"([A-Za-z_]\w*)\[[@*]\]", inner):
            return list(self.arrays[m[1]]) if m[1] in self.arrays else [_unset(f"${{{inner}}}")]
        if m := re.fullmatch(r"([A-Za-z_]\w*)\[(\d+)\]", inner):
            items = self.arrays.get(m[1], [])
            return items[int(m[2])] if int(m[2]) < len(items) else _unset(f"${{{inner}}}")
        if m := re.fullmatch(r"([A-Za-z_]\w*|[1-9])(:?)[-=](.*)", inner, re.S):
            value = self.vars.get(m[1])   # the script's own arguments ($1, ...) are unset: their default
            if value is None or (m[2] and not value):
                return "".join(w for w in self.words(f'"{m[3]}"', line) if w != SEP)
            return value
        if re.fullmatch(r"[A-Za-z_]\w*", inner):
            return self._var(inner)
        if inner == "0":
            return str(self.path)
        return _unset(f"${{{inner}}}")

    def _dollar(self, text: str, i: int, line: int) -> tuple[int, str | list[str]]:
        j = i + 1
        if j >= len(text):
            return j, "$"
        ch = text[j]
        if text.startswith("$((", i):
            k = _matching(text, j, "(", ")")
            return (len(text) if k < 0 else k + 1), _unset(text[i:k + 1])
        if ch == "(":
            k = _matching(text, j, "(", ")")
            if k < 0:
                fail(self.path, f"line {line}", "unclosed $( in the script")
            return k + 1, self._command(text[j + 1:k])
        if ch == "{":
            k = text.find("}", j)
            if k < 0:
                fail(self.path, f"line {line}", "unclosed ${ in the script")
            return k + 1, self._brace(text[j + 1:k], line)
        if ch.isalpha() or ch == "_":
            m = re.match(r"[A-Za-z_]\w*", text[j:])
            return j + m.end(), self._var(m.group())
        if ch == "0":
            return j + 1, str(self.path)
        if ch.isdigit() or ch in "@*#?$!-":
            return j + 1, _unset(f"${ch}")
        return j, "$"

    # -- words
    def words(self, text: str, line: int) -> list[str]:
        """The words of `text` after quote removal and expansion; SEP between commands."""
        out: list[str] = []
        cur: list[str] = []
        started = in_dq = False

        def finish():
            nonlocal cur, started
            if started:
                out.append("".join(cur))
            cur, started = [], False

        def add(value: str | list[str], quoted: bool):
            nonlocal started
            parts = value if isinstance(value, list) else ([value] if quoted else value.split())
            if isinstance(value, str) and not quoted and value[:1].isspace() and started:
                finish()
            for k, part in enumerate(parts):
                if k:
                    finish()
                cur.append(part)
                started = True
            if isinstance(value, str) and not quoted and value[-1:].isspace():
                finish()

        i, n = 0, len(text)
        while i < n:
            ch = text[i]
            if in_dq:
                if ch == '"':
                    in_dq = False
                    i += 1
                elif ch == "\\" and i + 1 < n and text[i + 1] in '$`"\\\n':
                    cur.append(text[i + 1])
                    i += 2
                elif ch == "$":
                    i, value = self._dollar(text, i, line)
                    add(value, True)
                elif ch == "`":
                    i, value = _backticks(text, i)
                    cur.append(value)
                else:
                    cur.append(ch)
                    i += 1
                continue
            if ch in " \t\n":
                finish()
                i += 1
            elif ch == "#" and not started:
                k = text.find("\n", i)
                i = n if k < 0 else k
            elif ch in ";&|<>":
                if ch in "<>" and started and "".join(cur).isdigit():
                    cur, started = [], False   # a file descriptor (2>&1)
                finish()
                while i < n and text[i] in ";&|<>":
                    i += 1
                out.append(SEP)
            elif ch == "'":
                k = text.find("'", i + 1)
                if k < 0:
                    fail(self.path, f"line {line}", "unclosed ' quote in the script")
                cur.append(text[i + 1:k])
                started = True
                i = k + 1
            elif ch == '"':
                in_dq = started = True
                i += 1
            elif ch == "\\":
                cur.append(text[i + 1:i + 2])
                started = True
                i += 2
            elif ch == "$":
                i, value = self._dollar(text, i, line)
                add(value, False)
            elif ch == "`":
                i, value = _backticks(text, i)
                cur.append(value)
                started = True
            else:
                cur.append(ch)
                started = True
                i += 1
        if in_dq:
            fail(self.path, f"line {line}", "unclosed \" quote in the script")
        finish()
        return out

    # -- statements
    def launches(self, text: str) -> list[tuple[int, list[str]]]:
        """Run the assignments in order; return each launch command (line, words)."""
        found: list[tuple[int, list[str]]] = []
        lines = _logical_lines(text)
        i = 0
        while i < len(lines):
            number, line = lines[i]
            i += 1
            if m := _ARRAY.match(line):
                body = m[2]
                while _close_paren(body) is None and i < len(lines):
                    body += "\n" + lines[i][1]
                    i += 1
                end = _close_paren(body)
                if end is None:
                    fail(self.path, f"line {number}", f"the array {m[1]}=( is never closed")
                self.arrays[m[1]] = [w for w in self.words(body[:end], number) if w != SEP]
                self.vars.pop(m[1], None)
                continue
            if m := _ASSIGN.match(line):
                words = self.words(m[2], number)
                head = words[:words.index(SEP)] if SEP in words else words
                rest = words[len(head):]
                if len(head) <= 1:
                    self.vars[m[1]] = head[0] if head else ""
                    self.arrays.pop(m[1], None)
                    words = rest
                else:   # VAR=value command ...: the command runs with it
                    words = head[1:] + rest
            else:
                words = self.words(line, number)
            command: list[str] = []
            for word in words + [SEP]:
                if word != SEP:
                    command.append(word)
                    continue
                if launch := _launch_words(command):
                    found.append((number, launch))
                command = []
        return found


_TORCHRUN_VALUE_OPTIONS = {"nnodes", "nproc_per_node", "node_rank", "master_addr", "master_port", "rdzv_backend",
                           "rdzv_endpoint", "rdzv_id", "rdzv_conf", "max_restarts", "monitor_interval",
                           "start_method", "role", "log_dir", "redirects", "r", "tee", "t", "local_addr", "logs_specs",
                           "local_ranks_filter", "rdzv_timeout"}
_PYTHON = re.compile(r"python(\d+(\.\d+)?)?$")


def _launch_words(words: list[str]) -> list[str] | None:
    """[program, flag, ...] when `words` launch a training pipeline, else None."""
    for i, word in enumerate(words):
        base = os.path.basename(word)
        if base == "torchrun":
            rest = words[i + 1:]
            break
        if _PYTHON.fullmatch(base):
            after = words[i + 1:]
            if after[:2] in (["-m", "torch.distributed.run"], ["-m", "torch.distributed.launch"]):
                rest = after[2:]
                break
            if after and (after[0].endswith("_pipeline.py") or after[:1] == ["-m"] and len(after) > 1
                          and after[1].startswith("fastvideo.training.")):
                rest = after
                if rest[0] == "-m":
                    return [rest[1]] + rest[2:]
                return rest
    else:
        return None
    k = 0
    while k < len(rest) and rest[k].startswith("-"):
        option = rest[k].lstrip("-")
        name = option.split("=", 1)[0].replace("-", "_")
        if name in ("m", "module") and "=" not in option:
            return rest[k + 1:k + 2] + rest[k + 2:] if k + 1 < len(rest) else None
        k += 1 if "=" in option or name not in _TORCHRUN_VALUE_OPTIONS else 2
    return rest[k:] if k < len(rest) else None


# ------------------------------------------------------------------------------------- flags -> Phase 2 recipe

_PIPELINES = {"wan_distillation_pipeline": "dmd2", "wan_training_pipeline": "finetune",
              "wan_self_forcing_distillation_pipeline": "self_forcing"}
_DMD_FLAGS = ("real_score_model_path", "fake_score_model_path", "dmd_denoising_steps", "generator_update_interval",
              "simulate_generator_forward", "fake_score_learning_rate")
_ROLE_FLAGS = {"pretrained_model_name_or_path": "student", "real_score_model_path": "teacher",
               "fake_score_model_path": "critic"}
# Legacy flags with no meaning in fvjax (left out); True: a bare boolean flag.
_DROPPED = {"cache_dir": False, "logging_dir": False, "dit_model_name_or_path": False, "generator_model_path": False,
            "validate_cache_structure": True, "ltx2_first_frame_conditioning_p": False, "dit_cpu_offload": True,
            "transformer_quant": False}
_REQUIRED = ("data_path", "dataloader_num_workers", "num_height", "num_width", "num_frames", "train_batch_size",
             "num_latent_t", "pretrained_model_name_or_path", "output_dir", "learning_rate")
_STR_LISTS = ("trackers", "text_encoder_precisions", "image_encoder_precisions", "lora_target_modules")
# argparse defaults of the legacy entry points that differ from TrainingArgs' (spec §8 (A)).
_LEGACY_DEFAULTS = {"seed": 42, "lr_warmup_steps": 10, "weighting_scheme": "uniform", "mode_scale": 1.29}
LEGACY_EMA_DECAY = 0.999
LEGACY_FINETUNE_SHIFT = 1.0


@dataclasses.dataclass(frozen=True)
class Launch:
    recipe: Recipe
    program: str
    described: str
    notes: tuple[str, ...]
    left_out: tuple[str, ...]            # flags given that fvjax never reads
    spell: Callable[[str], str]          # canonical key -> the script's flag


def _is_bool(name: str) -> bool:
    for fields in (TRAINING_FIELDS, PIPELINE_FIELDS):
        if name in fields:
            return isinstance(fields[name].default, bool)
    return _DROPPED.get(name, False)


def _flag_name(token: str) -> str:
    return token[2:].split("=", 1)[0].replace("-", "_")


def _parse_flags(tokens: list[str], path: Path) -> dict[str, str | bool]:
    """{name: value} in order of first appearance (argparse: the last value wins)."""
    flags: dict[str, str | bool] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or len(token) == 2:
            fail(path, token.replace("\x00", ""), "unexpected argument to the pipeline (flags are --name value)")
        name = _flag_name(token)
        known = name in TRAINING_FIELDS or name in PIPELINE_FIELDS or name in _DROPPED
        if not known:
            fail(path, f"--{name}", "not a flag of FastVideo's training pipelines that fvjax knows (TrainingArgs / "
                 "FastVideoArgs fields)")
        if "=" in token:
            value: str | bool | None = token.split("=", 1)[1]
            i += 1
        elif _is_bool(name):
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            if nxt is not None and not nxt.startswith("-"):
                value, i = nxt, i + 2
            else:
                value, i = True, i + 1
        else:
            if i + 1 >= len(tokens):
                fail(path, f"--{name}", "has no value")
            value, i = tokens[i + 1], i + 2
        if _is_bool(name) and isinstance(value, str):
            if value.lower() not in ("true", "false"):
                fail(path, f"--{name}", f"is {value!r}; FastVideo's boolean flags take true or false (or nothing)")
            value = value.lower() == "true"
        if isinstance(value, str) and "\x00" in value:
            what = value.split("\x00")[1]
            fail(path, f"--{name}", f"uses {what}, which the script does not set (fvjax reads the script, it does "
                 "not run it or read the environment); set it in the script or write the value")
        flags.pop(name, None)
        flags[name] = value
    return flags


def _method_for(program: str, flags: dict, path: Path) -> str:
    method = _PIPELINES.get(program)
    if method is None:
        if "self_forcing" in program:
            method = "self_forcing"
        elif any(f in flags for f in _DMD_FLAGS):
            method = "dmd2"
        elif program.endswith("training_pipeline") and "i2v" not in program:
            method = "finetune"
        else:
            fail(path, program, f"not a legacy pipeline fvjax can upgrade (it knows {', '.join(_PIPELINES)})")
    if method == "self_forcing":
        fail(path, program, "the upgrade does not read legacy self-forcing scripts; write the recipe in FastVideo's "
             "current schema (method: {_target_: ...SelfForcingMethod}, configs/examples/"
             "tiny_self_forcing_fastvideo_train.yaml)")
    return method


def _spell_map(method: str) -> dict[str, str]:
    spell = {"models.student.path": "--pretrained_model_name_or_path", "models.teacher.path": "--real_score_model_path",
             "models.critic.path": "--fake_score_model_path"}
    for param in get_method(method).params:
        other = [s for s in param.sources if s.section != METHOD]
        if other:
            spell[f"method_config.{param.name}"] = f"--{other[0].key}"
    return spell


def _speller(method: str) -> Callable[[str], str]:
    table = _spell_map(method)

    def spell(key: str) -> str:
        if key is None:
            return key
        if key in table:
            return table[key]
        for prefix in ("training.", "pipeline_config."):
            if key.startswith(prefix):
                return "--" + key[len(prefix):]
        return key
    return spell


def read_launch_script(path: Path) -> Launch:
    from fvjax.recipe.loader import parse_recipe

    text = read_text(path, "launch script")
    shell = _Shell(path)
    launches = shell.launches(text)
    if not launches:
        fail(path, None, "no torchrun launch of a FastVideo training pipeline found (expected e.g. `torchrun ... "
             "fastvideo/training/wan_distillation_pipeline.py --flag value ...`)")
    if len(launches) > 1:
        fail(path, None, f"launches more than once (lines {', '.join(str(n) for n, _ in launches)}); keep one launch "
             "per script to upgrade it")
    _, words = launches[0]
    program_word = words[0]
    if "\x00" in program_word:
        fail(path, None, f"the launched program uses {program_word.split(chr(0))[1]}, which the script does not set")
    program = os.path.basename(program_word)
    program = program[:-3] if program.endswith(".py") else program.rsplit(".", 1)[-1]
    flags = _parse_flags(words[1:], path)
    method = _method_for(program, flags, path)
    for name in _REQUIRED + (("real_score_model_path", "fake_score_model_path") if method == "dmd2" else ()):
        if name not in flags:
            fail(path, f"--{name}", f"missing; FastVideo's {program} requires it")
    quant = flags.get("transformer_quant")
    if quant not in (None, "", "None", "none"):
        fail(path, "--transformer_quant", "quantisation-aware training is not implemented in fvjax; remove it")

    notes: list[str] = []
    left_out: list[str] = []
    backend = shell.vars.get("FASTVIDEO_ATTENTION_BACKEND")
    if backend and "\x00" not in backend:
        name = backend.strip().upper()
        if name in CHANGING_BACKENDS:
            fail(path, "FASTVIDEO_ATTENTION_BACKEND", f"is {backend!r}: {CHANGING_BACKENDS[name]} is not implemented "
                 "in fvjax; remove it for dense attention")
        left_out.append("FASTVIDEO_ATTENTION_BACKEND")   # a dense PyTorch kernel: fvjax picks its own
    roles: dict[str, dict] = {}
    training: dict = {}
    pipeline: dict = {}
    for name, value in flags.items():
        if name in _DROPPED:
            left_out.append(f"--{name}")
        elif name in _ROLE_FLAGS and (method == "dmd2" or _ROLE_FLAGS[name] == "student"):
            roles[_ROLE_FLAGS[name]] = {"path": value}
        elif method == "finetune" and name in ("ema_decay", "use_ema", "real_score_model_path",
                                               "fake_score_model_path"):
            left_out.append(f"--{name}")   # the legacy finetune pipeline keeps no EMA, loads no teacher
        elif name in TRAINING_FIELDS:
            training[name] = value.split(",") if name in _STR_LISTS and isinstance(value, str) else value
        else:
            pipeline[name] = value.split(",") if name in _STR_LISTS and isinstance(value, str) else value
    if training.get("model_path") == roles["student"]["path"]:
        del training["model_path"]

    written = [f"--{k} {v}" for k, v in _LEGACY_DEFAULTS.items() if k not in flags]
    for name, value in _LEGACY_DEFAULTS.items():
        training.setdefault(name, value)
    roles["student"]["family"] = "wan"
    method_config: dict = {}
    if method == "dmd2":
        roles["teacher"].update(trainable=False, disable_custom_init_weights=True)
        roles["critic"].update(disable_custom_init_weights=True)
        if "ema_decay" not in flags:
            training["ema_decay"] = LEGACY_EMA_DECAY
            written.append(f"--ema_decay {LEGACY_EMA_DECAY}")
        if "simulate_generator_forward" not in flags:
            training["simulate_generator_forward"] = False
            written.append("no --simulate_generator_forward: rollout_mode data_latent")
    else:
        method_config["student_flow_shift"] = LEGACY_FINETUNE_SHIFT
        notes.append("The legacy finetune loop samples timesteps unshifted: models.student.flow_shift "
                     f"{LEGACY_FINETUNE_SHIFT}")
    if "max_grad_norm" not in flags:
        training["max_grad_norm"] = None
        written.append("no --max_grad_norm: no clipping")
    project = training.get("tracker_project_name")
    training.setdefault("trackers", ["wandb"] if project else ["none"])
    if not project:
        written.append("no --tracker_project_name: no tracker")
    notes.insert(0, "Legacy argparse defaults written out: " + ", ".join(written))

    order = get_method(method).role_names
    roles = {name: roles[name] for name in order if name in roles}
    raw = {"distill": {"model": "wan", "method": method}, "models": roles, "training": training,
           "pipeline_config": pipeline}
    if method_config:
        raw["method_config"] = method_config
    spell = _speller(method)
    try:
        recipe = parse_recipe(yaml.safe_dump(raw, sort_keys=False), path)
    except UserError as err:
        if err.where != str(path):
            raise
        raise UserError(path, spell(err.key), err.message) from None
    described = f"FastVideo legacy launch script, {program}"
    return Launch(recipe, program, described, tuple(notes), tuple(left_out), spell)
