"""The model catalog: the base models the bot knows, Flux's extra files, clear messages for unknown ids."""

from pathlib import Path

import pytest

from jobs.catalog import DEFAULT_CATALOG_PATH, CatalogError, load_catalog
from tests.jobs.data.specs import CATALOG


def test_the_shipped_catalog_has_the_five_base_models_by_family() -> None:
    assert {m.id: m.family for m in CATALOG.models} == {
        "illustrious-xl-v0.1": "sdxl",
        "sdxl-1.0": "sdxl",
        "pony-v6": "sdxl",
        "sd15": "sd15",
        "flux1-dev": "flux",
    }


def test_flux_is_gated_and_brings_ae_clip_l_and_t5xxl() -> None:
    flux = CATALOG.get("flux1-dev")
    assert flux.gated and flux.file.token_env == "HF_TOKEN"
    assert [f.role for f in flux.extra_files] == ["ae", "clip_l", "t5xxl"]
    assert flux.extra("t5xxl").volume_path == "{volume}/lorabot/models/t5xxl_fp16.safetensors"
    assert flux.total_bytes > 30_000_000_000


def test_every_shipped_file_with_a_published_digest_is_pinned_and_the_rest_say_why() -> None:
    """The CPU stage verifies a pinned file before the volume is marked ready, so a swapped or truncated download
    fails on the cheap pod; a file without a published digest carries a comment instead of an invented pin."""
    files = [f for m in CATALOG.models for f in (m.file, *m.extra_files)]
    unpinned = {f.filename for f in files if f.sha256 is None}
    assert unpinned == {"Illustrious-XL-v0.1.safetensors"}
    assert "No sha256: no digest for this file was found published" in DEFAULT_CATALOG_PATH.read_text()
    assert CATALOG.get("sd15").file.sha256 == "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa"


def test_lookup_ignores_case_and_spaces() -> None:
    assert CATALOG.get(" Illustrious-XL-v0.1 ").id == "illustrious-xl-v0.1"


def test_unknown_model_names_close_matches_and_all_known_ids() -> None:
    with pytest.raises(CatalogError) as err:
        CATALOG.get("ilustrious")
    assert str(err.value) == (
        "unknown base model 'ilustrious'. Did you mean illustrious-xl-v0.1? Known base models:"
        " illustrious-xl-v0.1, sdxl-1.0, pony-v6, sd15, flux1-dev."
    )


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('family = "sd15"', 'family = "sd3"', "family 'sd3' is not one of sdxl, sd15, flux"),
        (
            'filename = "v1-5-pruned-emaonly.safetensors"',
            'filename = "../evil.safetensors"',
            "filename '../evil.safetensors' must be a plain file name (no folders)",
        ),
        (
            'url = "https://huggingface.co/stable-diffusion-v1-5',
            'url = "http://huggingface.co/stable-diffusion-v1-5',
            "url must start with https://",
        ),
        (
            'token_env = "CIVITAI_TOKEN"',
            'token_env = "hunter2-secret"',
            "token_env must be an environment variable name like HF_TOKEN",
        ),
        ('  role = "ae"', '  role = "vae"', "extra file role 'vae' is not one of ae, clip_l, t5xxl"),
    ],
)
def test_a_broken_catalog_entry_is_refused_with_its_reason(tmp_path: Path, old: str, new: str, message: str) -> None:
    text = DEFAULT_CATALOG_PATH.read_text()
    assert old in text
    path = tmp_path / "models.toml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(CatalogError) as err:
        load_catalog(path)
    assert message in str(err.value)
    assert "hunter2" not in str(err.value) or "token_env" in message
