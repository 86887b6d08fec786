"""`python -m fvjax.tiny_pipeline` writes a Diffusers-layout Wan pipeline (fvjax's own writers, no torch) that
Diffusers, transformers and fvjax's loaders all read completely."""
from __future__ import annotations

import pytest

from fvjax.tiny_pipeline import main


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "pipeline"
    assert main(["--out", str(out), "--seed", "3"]) == 0
    return out


def test_every_component_loads_in_diffusers_and_transformers_without_missing_keys(pipeline):
    from diffusers import AutoencoderKLWan, WanPipeline, WanTransformer3DModel
    from transformers import AutoTokenizer, UMT5EncoderModel

    for cls, sub in ((WanTransformer3DModel, "transformer"), (AutoencoderKLWan, "vae")):
        _, info = cls.from_pretrained(pipeline / sub, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], (sub, info)
    _, info = UMT5EncoderModel.from_pretrained(pipeline / "text_encoder", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    ids = AutoTokenizer.from_pretrained(pipeline / "tokenizer")("a red cat runs")["input_ids"]
    assert len(ids) > 3 and ids[-1] == 1 and max(ids) < 256      # pieces, then </s>; within the tiny vocab
    WanPipeline.from_pretrained(pipeline)


def test_fvjax_loaders_read_it(pipeline):
    import fvjax
    from fvjax.families.wan.vae.loading import load_vae
    from fvjax.families.wan.text.prompt import PromptEncoder

    assert fvjax.load_transformer(pipeline).config.text_dim == 32
    assert load_vae(pipeline).config.base_dim == 8
    embeds = PromptEncoder.load(pipeline).encode(["a red cat", "blue water"], max_length=16)
    assert embeds.shape == (2, 16, 32)


def test_an_existing_output_is_refused(pipeline, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(pipeline)])
    assert exit_info.value.code == 2 and "already exists" in capsys.readouterr().err
