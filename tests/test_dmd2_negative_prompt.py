"""The negative-prompt embedding for DMD2's teacher: read from .npy / .safetensors, padded to 512 tokens
with a mask, zeros (and a warning) when none is given, one-line errors for bad files."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml
from safetensors.numpy import save_file

from fvjax.errors import UserError
from fvjax.methods.dmd2.negative_prompt import negative_prompt
from training_utils import REPO, make_data, write_recipe


def test_npy_and_safetensors_are_padded_to_512_with_a_mask(tmp_path):
    array = np.random.default_rng(0).standard_normal((7, 32)).astype(np.float32)
    np.save(tmp_path / "neg.npy", array)
    save_file({"embedding": array[None]}, str(tmp_path / "neg.safetensors"))   # [1, L, D], as an encoder writes
    for name in ("neg.npy", "neg.safetensors"):
        out = negative_prompt(str(tmp_path / name), 32, "recipe.yaml")
        assert out["embeds"].shape == (512, 32) and out["mask"].shape == (512,)
        np.testing.assert_array_equal(out["embeds"][:7], array)
        assert not out["embeds"][7:].any()
        np.testing.assert_array_equal(out["mask"], np.r_[np.ones(7), np.zeros(505)])


def test_no_file_gives_zeros_and_a_warning(capsys):
    out = negative_prompt("", 32, "recipe.yaml")
    assert not out["embeds"].any() and not out["mask"].any() and out["embeds"].shape == (512, 32)
    assert "negative_prompt_embedding is not set" in capsys.readouterr().err


@pytest.mark.parametrize("shape, message", [((5, 16), "text dim 16; the teacher expects 32"),
                                            ((600, 32), "600 tokens; at most 512"),
                                            ((2, 3, 32), "shape [2, 3, 32]")])
def test_bad_embeddings_name_the_key(tmp_path, shape, message):
    np.save(tmp_path / "neg.npy", np.zeros(shape, np.float32))
    with pytest.raises(UserError) as err:
        negative_prompt(str(tmp_path / "neg.npy"), 32, "recipe.yaml")
    assert "method_config.negative_prompt_embedding" in str(err.value) and message in str(err.value)


def test_missing_file_stops_the_trainer_with_one_line(tmp_path):
    recipe = yaml.safe_load((REPO / "configs/examples/tiny_dmd2.yaml").read_text())
    recipe["training"].update(data_path=make_data(tmp_path / "data"), output_dir=str(tmp_path / "out"))
    recipe["method_config"]["negative_prompt_embedding"] = str(tmp_path / "absent.npy")
    path = write_recipe(tmp_path / "r.yaml", recipe)
    proc = subprocess.run([sys.executable, "-m", "fvjax.train", "--config", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("fvjax: error:")]
    assert len(lines) == 1 and "method_config.negative_prompt_embedding" in lines[0] and "absent.npy" in lines[0]
    assert "Traceback" not in proc.stderr
