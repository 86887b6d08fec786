"""Validation prompt files read as FastVideo reads them (fastvideo_v3_recipes.md §5.5): JSON {"data": [...]} with
ujson's trailing commas, CSV and Parquet/Arrow with a caption column, fvjax's .txt; bad files are one-line user
errors. Then the real behaviour: a tiny finetune run renders one video per prompt of each format, the dry-run
reports the count, and a bad file is a dry-run warning and a refused run."""
from __future__ import annotations

import contextlib
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fvjax.data.prompt_files import count_prompts, describe_prompts, read_prompts, strip_trailing_commas
from fvjax.errors import UserError
from fvjax.train import main
from tiny_pipeline import write_tiny_wan_pipeline
from training_utils import finetune_recipe, make_data, write_recipe

# FastVideo's validation_4.json has trailing commas before "}"; ujson also takes them before "]" here.
TRAILING = """{
  "data": [
    {"caption": "a cat, then a dog}", "image_path": null,},
    {"caption": "rain on \\"glass\\", ]slow", "video_path": null, "num_inference_steps": 50,},
    {"caption": "a red ball",},
  ],
}
"""
TRAILING_PROMPTS = ["a cat, then a dog}", 'rain on "glass", ]slow', "a red ball"]
CSV = 'id,caption,note\n1,"a cat, then a dog",x\n2,"rain on ""glass""\nslow",\n\n3,a red ball,\n'
CSV_PROMPTS = ["a cat, then a dog", 'rain on "glass"\nslow', "a red ball"]
TABLE = pa.table({"caption": ["a cat, then a dog", "a red ball"], "image_path": [None, "x.png"]})


def write_parquet(path):
    pq.write_table(TABLE, path)
    return path


def write_arrow(path, stream: bool = True):
    with (pa.ipc.new_stream if stream else pa.ipc.new_file)(str(path), TABLE.schema) as writer:
        writer.write_table(TABLE)
    return path


def test_json_with_trailing_commas_as_fastvideo_reads_it(tmp_path):
    path = tmp_path / "validation.json"
    path.write_text(TRAILING)
    with pytest.raises(json.JSONDecodeError):
        json.loads(TRAILING)                    # Python's json rejects what ujson (FastVideo) reads
    assert read_prompts(str(path), "recipe.yaml") == TRAILING_PROMPTS
    assert json.loads(strip_trailing_commas(TRAILING))["data"][1]["caption"] == TRAILING_PROMPTS[1]
    assert strip_trailing_commas('["a,]", "b\\\\",]') == '["a,]", "b\\\\" ]'   # same length: error positions hold
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(["red sky", {"caption": "blue water"}]))
    assert read_prompts(str(bare), "recipe.yaml") == ["red sky", "blue water"]


def test_csv_parquet_arrow_and_text(tmp_path):
    csv_file = tmp_path / "prompts.csv"
    csv_file.write_text(CSV)
    assert read_prompts(str(csv_file), "recipe.yaml") == CSV_PROMPTS
    expected = ["a cat, then a dog", "a red ball"]
    assert read_prompts(str(write_parquet(tmp_path / "p.parquet")), "recipe.yaml") == expected
    assert read_prompts(str(write_arrow(tmp_path / "stream.arrow")), "recipe.yaml") == expected   # as datasets
    assert read_prompts(str(write_arrow(tmp_path / "file.arrow", stream=False)), "recipe.yaml") == expected
    text = tmp_path / "prompts.txt"
    text.write_text("a cat\n\n  a dog runs  \n")
    assert read_prompts(str(text), "recipe.yaml") == ["a cat", "a dog runs"]
    assert count_prompts(str(csv_file)) == 3
    assert describe_prompts(str(csv_file)) == f"3 prompts from {csv_file} (CSV)"
    assert describe_prompts(str(tmp_path / "missing.csv")) is None and describe_prompts("") is None


BAD = [
    ("no_caption.csv", "id,prompt\n1,a cat\n",
     "training.validation_dataset_file: has no caption column (header: id, prompt)"),
    ("empty_cell.csv", "id,caption\n1,a cat\n2,\n", "record 1 caption (line 3): is empty or missing"),
    ("open_quote.csv", 'caption\na cat\n"a dog\n', "the quoted field of the row at line 3 is never closed"),
    ("no_caption.json", '{"data": [{"caption": "a"}, {"prompt": "b"}]}',
     'data[1]: has no "caption" key (keys: prompt)'),
    ("null.json", '{"data": [{"caption": null}]}', "data[0].caption: is empty or missing"),
    ("number.json", '{"data": [{"caption": 7}]}', "data[0].caption: is int 7; a caption must be text"),
    ("bad.json", '{\n  "data": [\n    {"caption": "a"\n  ]\n}',
     "invalid JSON: Expecting ',' delimiter at line 4 column 3"),
    ("lines.json", '{"caption": "a"}\n{"caption": "b"}\n', "JSON Lines (one object per line) is not read"),
    ("string.json", '"a cat"', "the top level is a JSON string"),
    ("no_data.json", '{"prompts": ["x"]}', 'has no "data" key (keys: prompts)'),
    ("empty.json", '{"data": []}', "holds no prompts"),
    ("latin1.txt", "caf\xe9\n".encode("latin-1"), "is not UTF-8 text"),
    ("latin1.csv", "caption\ncaf\xe9\n".encode("latin-1"), "is not UTF-8 text"),
    ("junk.parquet", b"not parquet", "is not a readable Parquet file"),
    ("junk.arrow", b"not arrow at all", "is not a readable Arrow IPC file"),
    ("prompts.JSON", '{"data": [{"caption": "a"}]}', "unknown prompt file type '.JSON'; the suffix must be one of "
     ".json, .csv, .parquet, .arrow, .txt"),
    ("prompts.jsonl", '{"caption": "a"}\n', "unknown prompt file type '.jsonl'"),
]


@pytest.mark.parametrize("name,content,needle", BAD, ids=[b[0] for b in BAD])
def test_bad_prompt_files_are_one_line_user_errors(tmp_path, name, content, needle):
    path = tmp_path / name
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    with pytest.raises(UserError) as err:
        read_prompts(str(path), "recipe.yaml")
    line = err.value.line()
    assert needle in line and "\n" not in line, line
    assert str(path) in line or "recipe.yaml: training.validation_dataset_file" in line, line


def test_bad_columns_of_tables(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"prompt": ["a"]}), path)
    with pytest.raises(UserError, match="has no caption column \\(columns: prompt\\)"):
        read_prompts(str(path), "recipe.yaml")
    pq.write_table(pa.table({"caption": ["a", None]}), path)
    with pytest.raises(UserError, match="record 1 caption: is empty or missing"):
        read_prompts(str(path), "recipe.yaml")
    with pytest.raises(UserError, match="recipe.yaml: training.validation_dataset_file: .*does not exist"):
        read_prompts(str(tmp_path / "missing.json"), "recipe.yaml")


# ---- the real behaviour: a tiny run renders them, the dry-run counts them -----------------------------------

@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    return str(write_tiny_wan_pipeline(tmp_path_factory.mktemp("pipeline")))


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def _validation_recipe(tmp_path, pipeline, prompts) -> tuple[dict, str]:
    recipe = finetune_recipe(make_data(tmp_path / "data", num_samples=2), tmp_path / "run", max_train_steps=1,
                             model_path=pipeline, log_validation=True, validation_steps=2,
                             validation_dataset_file=str(prompts), validation_sampling_steps=[1])
    return recipe, str(write_recipe(tmp_path / "recipe.yaml", recipe))


@pytest.mark.parametrize("fmt,count", [("JSON", 3), ("CSV", 3), ("Parquet", 2)])
def test_a_tiny_run_renders_each_prompt_and_the_dry_run_counts_them(tmp_path, pipeline, fmt, count):
    if fmt == "JSON":
        (prompts := tmp_path / "validation.json").write_text(TRAILING)
    elif fmt == "CSV":
        (prompts := tmp_path / "validation.csv").write_text(CSV)
    else:
        prompts = write_parquet(tmp_path / "validation.parquet")
    recipe, path = _validation_recipe(tmp_path, pipeline, prompts)
    code, out, err = run("--config", path, "--dry-run")
    assert code == 0 and err == "", err
    assert f"  validation  {count} prompts from {prompts} ({fmt})" in out
    assert "warning" not in out, out
    code, _, err = run("--config", path)
    assert code == 0, err
    videos = sorted(p.name for p in (tmp_path / "run").glob("validation_step_*.mp4"))
    assert videos == [f"validation_step_0_inference_steps_1_video_{i}.mp4" for i in range(count)]


def test_a_bad_prompt_file_is_a_dry_run_warning_and_a_refused_run(tmp_path, pipeline):
    prompts = tmp_path / "validation.json"
    prompts.write_text('{"data": [{"caption": "a cat"}, {"caption": ""}]}')
    _, path = _validation_recipe(tmp_path, pipeline, prompts)
    code, out, err = run("--config", path, "--dry-run")
    assert code == 0 and err == ""
    assert (f"warning: missing input: training.validation_dataset_file: {prompts}: data[1].caption: is empty or "
            "missing") in out
    assert "  validation  " not in out
    code, out, err = run("--config", path)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"fvjax: error: {path}: training.validation_dataset_file: {prompts}: data[1].caption: "
                          "is empty or missing"), err
    assert not (tmp_path / "run").exists()
