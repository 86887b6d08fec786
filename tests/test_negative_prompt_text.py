"""DMD2's negative prompt encoded by fvjax's UMT5 when the teacher is a Diffusers pipeline with a text
encoder: equal to what Diffusers' WanPipeline.encode_prompt gives for the same text, placed in the runtime."""
from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
import yaml

from fvjax.errors import UserError
from fvjax.families.wan.config import PRESETS as WAN_PRESETS
from fvjax.methods.dmd2.negative_prompt import negative_prompt, pipeline_with_text_encoder
from fvjax.recipe.loader import parse_recipe
from fvjax.training.roles import add_frozen_extras, build_runtime
from fvjax.sharding.logical import use_rules
from fvjax.sharding.mesh import make_mesh, select_devices
from fvjax.sharding.rules import rules_for
from fvjax.families.wan.text import WAN_DEFAULT_NEGATIVE_PROMPT
from text_utils import tiny_hf_encoder, tiny_tokenizer
from training_utils import REPO

TEXT_DIM = WAN_PRESETS["tiny-teacher"].text_dim


@pytest.fixture(scope="module")
def teacher_pipeline(tmp_path_factory):
    """A tiny Wan pipeline dir (transformer = the tiny-teacher config, UMT5 text encoder, tokenizer) as
    WanPipeline.save_pretrained writes it, and the pipeline object as the oracle."""
    from diffusers import WanPipeline, WanTransformer3DModel

    cfg = {k: v for k, v in WAN_PRESETS["tiny-teacher"].to_diffusers_config().items() if k != "_class_name"}
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(**cfg)
    tokenizer = tiny_tokenizer()
    encoder = tiny_hf_encoder(vocab_size=len(tokenizer) + 3, d_model=TEXT_DIM)
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=encoder, vae=None, scheduler=None, transformer=transformer)
    root = tmp_path_factory.mktemp("teacher_pipeline")
    pipe.save_pretrained(root)
    return root, pipe


def _expected(pipe, text: str) -> np.ndarray:
    with torch.no_grad():
        _, neg = pipe.encode_prompt("unused", negative_prompt=text, max_sequence_length=512,
                                    device=torch.device("cpu"), dtype=torch.float32)
    return neg[0].numpy()


def test_default_and_override_texts_match_wan_pipeline(teacher_pipeline):
    root, pipe = teacher_pipeline
    assert pipeline_with_text_encoder(str(root)) == root
    out = negative_prompt("", TEXT_DIM, "recipe.yaml", pipeline=root)
    np.testing.assert_allclose(out["embeds"], _expected(pipe, WAN_DEFAULT_NEGATIVE_PROMPT), atol=5e-5, rtol=0)
    n = int(out["mask"].sum())
    assert out["embeds"].shape == (512, TEXT_DIM) and 1 < n < 512 and not out["embeds"][n:].any()
    custom = negative_prompt("", TEXT_DIM, "recipe.yaml", pipeline=root, text="blurry, static")
    np.testing.assert_allclose(custom["embeds"], _expected(pipe, "blurry, static"), atol=5e-5, rtol=0)


def test_text_errors(teacher_pipeline, tmp_path):
    root, _ = teacher_pipeline
    np.save(tmp_path / "neg.npy", np.zeros((3, TEXT_DIM), np.float32))
    with pytest.raises(UserError, match="give one"):
        negative_prompt(str(tmp_path / "neg.npy"), TEXT_DIM, "r.yaml", pipeline=root, text="blurry")
    with pytest.raises(UserError, match="needs a text encoder"):
        negative_prompt("", TEXT_DIM, "r.yaml", pipeline=None, text="blurry")
    with pytest.raises(UserError, match="teacher expects text_dim 64"):
        negative_prompt("", 64, "r.yaml", pipeline=root)
    assert pipeline_with_text_encoder(str(root / "transformer")) is None
    assert pipeline_with_text_encoder("no-such-org/no-such-model") is None  # not cached: nothing downloaded


def test_dmd2_runtime_gets_the_encoded_negative_prompt(teacher_pipeline, tmp_path):
    root, pipe = teacher_pipeline
    recipe = yaml.safe_load((REPO / "configs/examples/tiny_dmd2.yaml").read_text())
    recipe["models"]["teacher"]["path"] = str(root)
    recipe["training"]["output_dir"] = str(tmp_path / "out")
    recipe["method_config"]["negative_prompt"] = "overexposed, static"
    parsed = parse_recipe(yaml.safe_dump(recipe), tmp_path / "recipe.yaml", device_count=1)
    assert parsed.method_config.negative_prompt == "overexposed, static"
    mesh = make_mesh(parsed.mesh, select_devices(parsed.mesh), where=parsed.source)
    _, rules = rules_for(parsed.mesh)
    with use_rules(mesh, rules):
        runtime = build_runtime(parsed, mesh, rules)
        add_frozen_extras(parsed, runtime)
    frozen = runtime.frozen["negative_prompt"]
    np.testing.assert_allclose(np.asarray(frozen["embeds"]), _expected(pipe, "overexposed, static"), atol=5e-5,
                               rtol=0)
    assert frozen["embeds"].sharding.is_fully_replicated and isinstance(frozen["mask"], jax.Array)
