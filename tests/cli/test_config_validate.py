"""`palyra config validate` lists every problem of config.toml in one run."""

from __future__ import annotations

from pathlib import Path

import pytest

from palyra.config import ConfigError, validate_config
from tests.support.cli import isolated_env, palyra


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return isolated_env(tmp_path)


def errors(stderr: str) -> list[str]:
    prefix = "palyra: error: "
    lines = stderr.splitlines()
    assert all(line.startswith(prefix) for line in lines), stderr
    return [line.removeprefix(prefix) for line in lines]


# --- references are checked whatever else is wrong ---------------------------------------

# A private base_url without allow_private_base_url, a plain api_key on a provider, a model on
# a provider that does not exist and a fallback to a model that does not.
SECTION_WITH_PROBLEMS = """version = 1
[model_provider]
default_chat_model_id = "missing"
[[model_provider.providers]]
provider_id = "oai"
kind = "openai_compatible"
base_url = "http://10.0.0.7/v1"
api_key = "sk-never-echo-this-0123456789"
[[model_provider.models]]
model_id = "m"
provider_id = "nowhere"
fallbacks = ["nope"]
"""


def test_references_are_checked_when_the_section_has_other_problems(
    tmp_path: Path, env: dict[str, str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(SECTION_WITH_PROBLEMS)
    result = palyra("config", "validate", str(config), env=env)
    assert result.returncode == 1
    problems = [line.removeprefix(f"config: {config}: ") for line in errors(result.stderr)]
    assert problems[0].startswith("model_provider.providers[0].api_key: plain API keys")
    assert problems[1:] == [
        "model_provider.providers[0].base_url: plain http is only allowed to loopback; use https",
        "model_provider.models[0].provider_id: no provider 'nowhere' is configured",
        "model_provider.models[0].fallbacks[0]: no model 'nope' is configured",
        "model_provider.default_chat_model_id: no model 'missing' is configured",
    ]
    assert "sk-never-echo-this" not in result.stderr


def problems_of(raw: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        validate_config(raw)
    return caught.value.problems


def test_raw_references_leave_out_what_the_schema_already_reports() -> None:
    provider = {"provider_id": "p", "kind": "deterministic"}
    # A wrong role: the deployments' roles are not compared (it is reported once, as wrong).
    assert problems_of(
        {
            "version": 1,
            "model_provider": {
                "providers": [provider, {"provider_id": "q", "kind": "deterministic"}],
                "models": [
                    {"model_id": "m", "provider_id": "p", "role": "painting"},
                    {"model_id": "m", "provider_id": "q", "fallbacks": ["m", 7, "gone"]},
                ],
            },
        }
    ) == [
        "model_provider.models[0].role: input should be 'chat', 'embeddings' or "
        "'audio_transcription' (got 'painting')",
        "model_provider.models[1].fallbacks[1]: input should be a valid string (got 7)",
        "model_provider.models[1].fallbacks[0]: a model cannot fall back to itself",
        "model_provider.models[1].fallbacks[2]: no model 'gone' is configured",
    ]
    # Two deployments on one provider and fallbacks that disagree, beside a wrong number.
    assert problems_of(
        {
            "version": 1,
            "model_provider": {
                "max_retries": 99,
                "providers": [provider],
                "models": [
                    {"model_id": "a", "provider_id": "p"},
                    {"model_id": "m", "provider_id": "p", "fallbacks": ["a"]},
                    {"model_id": "m", "provider_id": "p", "fallbacks": ["b"]},
                ],
            },
        }
    ) == [
        "model_provider.max_retries: input should be less than or equal to 10 (got 99)",
        "model_provider.models[2].model_id: 'm' is already on provider 'p' as models[1]; "
        "deployments of one model must be on different providers",
        "model_provider.models[2].fallbacks[0]: no model 'b' is configured",
    ]
    # No providers and no models: the built-in ones, as when the section validates.
    assert problems_of(
        {
            "version": 1,
            "model_provider": {"max_retries": 99, "default_chat_model_id": "deterministic-embed"},
        }
    ) == [
        "model_provider.max_retries: input should be less than or equal to 10 (got 99)",
        "model_provider.default_chat_model_id: 'deterministic-embed' has role embeddings, not chat",
    ]
