"""The config layer: where the file is found, what wins, and that every error names its key."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pytest

from palyra.config import (
    DEFAULT_PORT,
    DETERMINISTIC_PROVIDER_ID,
    ConfigError,
    PalyraConfig,
    config_for_display,
    find_config_path,
    load_config,
    resolve_state_dir,
    validate_config,
)
from palyra.types import ModelProviderKind, ProviderModelRole

# --- helpers ----------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def problems_of(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        validate_config(raw)
    return info.value.problems


def only_problem(raw: dict[str, Any]) -> str:
    problems = problems_of(raw)
    assert len(problems) == 1, problems
    return problems[0]


def with_providers(*providers: dict[str, Any], **model_provider: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "model_provider": {"providers": list(providers), "models": [], **model_provider},
    }


def openai(**fields: Any) -> dict[str, Any]:
    return {"provider_id": "oai", "kind": "openai_compatible", **fields}


def base_url_problem(url: str, allow_private: bool = False) -> str:
    return only_problem(with_providers(openai(base_url=url, allow_private_base_url=allow_private)))


def base_url_of(url: str, allow_private: bool = False) -> str:
    config = validate_config(
        with_providers(openai(base_url=url, allow_private_base_url=allow_private))
    )
    return config.model_provider.providers[0].base_url


DET = {"provider_id": "det", "kind": "deterministic"}


def model(model_id: str, role: str = "chat", **fields: Any) -> dict[str, Any]:
    return {"model_id": model_id, "provider_id": "det", "role": role, **fields}


def with_models(*models: dict[str, Any], **model_provider: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "model_provider": {"providers": [DET], "models": list(models), **model_provider},
    }


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """An env with a HOME of its own and nothing else: no XDG, no PALYRA_*."""
    (tmp_path / "home").mkdir()
    return {"HOME": str(tmp_path / "home")}


# --- no file at all ---------------------------------------------------------------------


def test_no_file_at_all_is_valid_and_gives_the_deterministic_registry(
    home: dict[str, str],
) -> None:
    loaded = load_config(None, env=home)
    assert loaded.path is None
    config = loaded.config
    assert config.version == 1
    assert config.daemon.bind == "127.0.0.1"
    assert config.daemon.port == DEFAULT_PORT == 7142
    providers = config.model_provider.providers
    assert [(p.provider_id, p.kind) for p in providers] == [
        ("deterministic-primary", ModelProviderKind.DETERMINISTIC)
    ]
    assert DETERMINISTIC_PROVIDER_ID == "deterministic-primary"
    assert [(m.model_id, m.provider_id, m.role) for m in config.model_provider.models] == [
        ("deterministic", "deterministic-primary", ProviderModelRole.CHAT),
        ("deterministic-embed", "deterministic-primary", ProviderModelRole.EMBEDDINGS),
        (
            "deterministic-transcribe",
            "deterministic-primary",
            ProviderModelRole.AUDIO_TRANSCRIPTION,
        ),
    ]


def test_contract_defaults() -> None:
    config = validate_config({"version": 1})
    mp = config.model_provider
    assert mp.failover_enabled is True
    assert (mp.request_timeout_ms, mp.max_retries, mp.retry_backoff_ms) == (60000, 2, 150)
    assert (mp.circuit_breaker_failure_threshold, mp.circuit_breaker_cooldown_ms) == (3, 30000)
    assert (mp.discovery_ttl_ms, mp.health_ttl_ms, mp.max_model_tokens_per_event) == (
        300000,
        60000,
        0,
    )
    assert config.state.backend == "sqlite"
    assert config.auth.openai_oauth.scopes == ["openid", "profile", "email", "offline_access"]
    assert config.auth.openai_oauth.token_endpoint == "https://auth.openai.com/oauth/token"
    assert (config.cron.enabled, config.cron.timezone, config.cron.max_concurrent_runs) == (
        True,
        "UTC",
        4,
    )
    assert (config.cron.history_retention_days, config.cron.catch_up_window_ms) == (30, 86400000)


def test_a_file_with_providers_gets_no_builtin_registry(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.toml",
        """
        version = 1
        [[model_provider.providers]]
        provider_id = "det"
        kind = "deterministic"
        [[model_provider.models]]
        model_id = "m"
        provider_id = "det"
        """,
    )
    config = load_config(path, env={}).config
    assert [p.provider_id for p in config.model_provider.providers] == ["det"]
    assert [m.model_id for m in config.model_provider.models] == ["m"]


# --- file discovery ---------------------------------------------------------------------


def test_explicit_path_beats_env_beats_xdg(tmp_path: Path, home: dict[str, str]) -> None:
    explicit = write(tmp_path / "explicit.toml", "version = 1\n[daemon]\nport = 1001\n")
    from_env = write(tmp_path / "env.toml", "version = 1\n[daemon]\nport = 1002\n")
    xdg = write(tmp_path / "xdg" / "palyra" / "config.toml", "version = 1\n[daemon]\nport = 1003\n")
    env = {**home, "PALYRA_CONFIG": str(from_env), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}

    assert find_config_path(explicit, env) == explicit
    assert load_config(explicit, env=env).config.daemon.port == 1001
    assert find_config_path(None, env) == from_env
    assert load_config(None, env=env).config.daemon.port == 1002
    del env["PALYRA_CONFIG"]
    assert find_config_path(None, env) == xdg
    loaded = load_config(None, env=env)
    assert (loaded.path, loaded.config.daemon.port) == (xdg, 1003)


def test_xdg_falls_back_to_home_dot_config(home: dict[str, str]) -> None:
    path = write(Path(home["HOME"]) / ".config" / "palyra" / "config.toml", "version = 1\n")
    assert find_config_path(None, home) == path


def test_missing_xdg_file_means_defaults(tmp_path: Path, home: dict[str, str]) -> None:
    env = {**home, "XDG_CONFIG_HOME": str(tmp_path / "nothing-here")}
    assert find_config_path(None, env) is None
    loaded = load_config(None, env=env)
    assert loaded.path is None
    assert loaded.config.daemon.port == 7142


def test_explicit_missing_path_is_an_error(tmp_path: Path, home: dict[str, str]) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing, env=home)
    assert str(info.value) == f"{missing}: file not found"


def test_missing_file_named_by_palyra_config_is_an_error(
    tmp_path: Path, home: dict[str, str]
) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="file not found"):
        load_config(None, env={**home, "PALYRA_CONFIG": str(missing)})


def test_invalid_toml_names_the_file_and_the_problem(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.toml", "version = 1\n[daemon\nport = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert message.startswith(f"{path}: invalid TOML: ")
    assert "line 2" in message


# --- value precedence -------------------------------------------------------------------


def test_defaults_then_file_then_env_then_flags(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.toml",
        """
        version = 1
        [daemon]
        port = 8001
        bind = "127.0.0.2"
        [model_provider]
        max_retries = 5
        """,
    )
    config = load_config(path, env={}).config
    assert (config.daemon.port, config.daemon.bind, config.model_provider.max_retries) == (
        8001,
        "127.0.0.2",
        5,
    )
    assert config.model_provider.retry_backoff_ms == 150  # untouched default

    env = {"PALYRA_DAEMON_PORT": "8002", "PALYRA_MODEL_PROVIDER_MAX_RETRIES": "7"}
    config = load_config(path, env=env).config
    assert (config.daemon.port, config.daemon.bind, config.model_provider.max_retries) == (
        8002,
        "127.0.0.2",
        7,
    )

    config = load_config(path, env=env, overrides={"daemon.port": 8003, "daemon.bind": None}).config
    assert (config.daemon.port, config.daemon.bind) == (8003, "127.0.0.2")


def test_env_booleans_and_strings(home: dict[str, str]) -> None:
    env = {
        **home,
        "PALYRA_MODEL_PROVIDER_FAILOVER_ENABLED": "false",
        "PALYRA_CRON_TIMEZONE": "Europe/Prague",
        "PALYRA_STATE_BACKEND": "postgres",
        "PALYRA_STATE_URL": "postgresql://db.example/palyra",
    }
    config = load_config(None, env=env).config
    assert config.model_provider.failover_enabled is False
    assert config.cron.timezone == "Europe/Prague"
    assert (config.state.backend, config.state.url) == (
        "postgres",
        "postgresql://db.example/palyra",
    )
    env["PALYRA_MODEL_PROVIDER_FAILOVER_ENABLED"] = "true"
    assert load_config(None, env=env).config.model_provider.failover_enabled is True


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("openid, email", ["openid", "email"]),
        ("openid,email,,", ["openid", "email"]),
        ('["openid", "api.read"]', ["openid", "api.read"]),
        ("[]", []),
    ],
)
def test_env_list_as_comma_list_or_json(
    home: dict[str, str], value: str, expected: list[str]
) -> None:
    config = load_config(None, env={**home, "PALYRA_AUTH_OPENAI_OAUTH_SCOPES": value}).config
    assert config.auth.openai_oauth.scopes == expected


def test_env_list_with_broken_json_names_key_and_env(home: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={**home, "PALYRA_AUTH_OPENAI_OAUTH_SCOPES": '["openid"'})
    assert info.value.problems == [
        "auth.openai_oauth.scopes (from env PALYRA_AUTH_OPENAI_OAUTH_SCOPES): not a JSON list"
    ]


def test_bad_env_value_names_the_key_and_the_env_var(home: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={**home, "PALYRA_DAEMON_PORT": "abc"})
    [problem] = info.value.problems
    assert problem.startswith("daemon.port (from env PALYRA_DAEMON_PORT): ")
    assert "integer" in problem


def test_bad_env_value_over_a_file_names_the_env_var(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "version = 1\n[model_provider]\nmax_retries = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={"PALYRA_MODEL_PROVIDER_MAX_RETRIES": "11"})
    assert str(info.value).startswith(
        f"{path}: model_provider.max_retries (from env PALYRA_MODEL_PROVIDER_MAX_RETRIES): "
    )
    assert "10" in str(info.value)


def test_bad_flag_value_says_it_came_from_the_command_line(home: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env=home, overrides={"daemon.port": 0})
    [problem] = info.value.problems
    assert problem.startswith("daemon.port (from the command line): ")


def test_env_does_not_hide_a_broken_section_in_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "version = 1\ndaemon = 5\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={"PALYRA_DAEMON_PORT": "8000"})
    assert info.value.problems[0].startswith("daemon: ")


def test_unrelated_palyra_env_vars_are_ignored(home: dict[str, str]) -> None:
    env = {**home, "PALYRA_ADMIN_TOKEN": "x", "PALYRA_STATE_DIR": "/tmp/s", "PALYRA_NOPE": "1"}
    assert load_config(None, env=env).config.daemon.port == 7142


# --- version and unknown keys -----------------------------------------------------------


def test_version_is_required(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "[daemon]\nport = 8000\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.problems[0].startswith("version: ")
    assert "version = 1" in info.value.problems[0]


@pytest.mark.parametrize("version", [2, 0, "1", True, 1.0])
def test_version_must_be_the_integer_one(version: object) -> None:
    problem = only_problem({"version": version})
    assert problem.startswith("version: ")
    assert "1" in problem


def test_unknown_key_in_second_provider_names_its_exact_path(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.toml",
        """
        version = 1
        [[model_provider.providers]]
        provider_id = "det"
        kind = "deterministic"

        [[model_provider.providers]]
        provider_id = "oai"
        kind = "openai_compatible"
        bse_url = "https://api.openai.com/v1"
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.problems == ["model_provider.providers[1].bse_url: unknown key"]
    assert str(info.value) == f"{path}: model_provider.providers[1].bse_url: unknown key"


def test_unknown_top_level_section() -> None:
    assert only_problem({"version": 1, "deamon": {"port": 1}}) == "deamon: unknown key"


def test_unknown_key_in_daemon() -> None:
    assert only_problem({"version": 1, "daemon": {"prot": 1}}) == "daemon.prot: unknown key"


def test_unknown_key_in_a_model_and_in_auth() -> None:
    raw = with_models(model("m", vison=True))
    assert only_problem(raw) == "model_provider.models[0].vison: unknown key"
    raw = {"version": 1, "auth": {"openai_oauth": {"scope": ["x"]}}}
    assert only_problem(raw) == "auth.openai_oauth.scope: unknown key"


def test_all_problems_are_reported_at_once() -> None:
    problems = problems_of({"version": 1, "daemon": {"prot": 1}, "cron": {"tz": "UTC"}})
    assert problems == ["daemon.prot: unknown key", "cron.tz: unknown key"]


# --- validation rules: each error names key and rule -------------------------------------


def test_max_retries_at_most_ten() -> None:
    problem = only_problem({"version": 1, "model_provider": {"max_retries": 11}})
    assert problem.startswith("model_provider.max_retries: ")
    assert "10" in problem
    assert validate_config({"version": 1, "model_provider": {"max_retries": 10}})


def test_provider_max_retries_at_most_ten() -> None:
    problem = only_problem(with_providers({**DET, "max_retries": 11}))
    assert problem.startswith("model_provider.providers[0].max_retries: ")
    assert "10" in problem


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_port_range(port: int) -> None:
    problem = only_problem({"version": 1, "daemon": {"port": port}})
    assert problem.startswith("daemon.port: ")
    assert ("1" if port < 1 else "65535") in problem


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"version": 1, "daemon": {"port": True}}, "daemon.port"),
        (with_providers({**DET, "max_retries": False}), "model_provider.providers[0].max_retries"),
        (
            {"version": 1, "model_provider": {"request_timeout_ms": True}},
            "model_provider.request_timeout_ms",
        ),
    ],
)
def test_true_or_false_is_no_number(raw: dict[str, object], path: str) -> None:
    problem = only_problem(raw)
    assert problem.startswith(f"{path}: must be a number"), problem


def test_booleans_still_work_where_booleans_belong() -> None:
    config = validate_config(
        {"version": 1, "model_provider": {"failover_enabled": False, "max_retries": 0}}
    )
    assert config.model_provider.failover_enabled is False
    assert config.model_provider.max_retries == 0


@pytest.mark.parametrize("provider_id", ["Open AI", "oai/x", "ÖAI", "", "a" * 129])
def test_provider_id_charset_and_length(provider_id: str) -> None:
    problem = only_problem(with_providers({"provider_id": provider_id, "kind": "deterministic"}))
    assert problem.startswith("model_provider.providers[0].provider_id: ")
    rule = "128" if len(provider_id) > 128 else ("empty" if not provider_id else "a-z")
    assert rule in problem


def test_provider_id_may_be_128_of_the_allowed_characters() -> None:
    pid = "a.b_c:d-0" + "x" * 119
    assert len(pid) == 128
    config = validate_config(with_providers({"provider_id": pid, "kind": "deterministic"}))
    assert config.model_provider.providers[0].provider_id == pid


def test_provider_kind_must_be_known() -> None:
    problem = only_problem(with_providers({"provider_id": "x", "kind": "gemini"}))
    assert problem.startswith("model_provider.providers[0].kind: ")
    assert "'openai_compatible'" in problem
    assert "gemini" in problem


def test_provider_kind_is_required() -> None:
    assert (
        only_problem(with_providers({"provider_id": "x"}))
        == "model_provider.providers[0].kind: required"
    )


def test_model_role_must_be_known() -> None:
    problem = only_problem(with_models(model("m", role="vision")))
    assert problem.startswith("model_provider.models[0].role: ")
    assert "'audio_transcription'" in problem


def test_max_output_tokens_not_above_context() -> None:
    problem = only_problem(with_models(model("m", max_context_tokens=100, max_output_tokens=101)))
    assert problem == (
        "model_provider.models[0].max_output_tokens: must not exceed max_context_tokens"
    )
    assert validate_config(with_models(model("m", max_context_tokens=100, max_output_tokens=100)))


def test_duplicate_provider_ids() -> None:
    assert only_problem(with_providers(DET, DET)) == (
        "model_provider.providers[1].provider_id: duplicate id 'det'"
    )


def test_the_same_model_twice_on_one_provider_is_refused_naming_both_entries() -> None:
    assert only_problem(with_models(model("m"), model("n"), model("m"))) == (
        "model_provider.models[2].model_id: 'm' is already on provider 'det' as models[0]; "
        "deployments of one model must be on different providers"
    )


def test_model_must_reference_a_configured_provider() -> None:
    raw = with_models({"model_id": "m", "provider_id": "ghost"})
    assert (
        only_problem(raw)
        == "model_provider.models[0].provider_id: no provider 'ghost' is configured"
    )


def test_fallbacks_must_be_known_models_of_the_same_role_and_not_itself() -> None:
    raw = with_models(
        model("a", fallbacks=["ghost", "a", "e", "b"]), model("b"), model("e", "embeddings")
    )
    assert problems_of(raw) == [
        "model_provider.models[0].fallbacks[0]: no model 'ghost' is configured",
        "model_provider.models[0].fallbacks[1]: a model cannot fall back to itself",
        "model_provider.models[0].fallbacks[2]: 'e' has role embeddings, not chat",
    ]


def test_default_model_ids_must_exist_with_the_right_role() -> None:
    raw = with_models(
        model("c"),
        model("e", "embeddings"),
        default_chat_model_id="e",
        default_embeddings_model_id="nope",
        default_audio_transcription_model_id="c",
    )
    assert problems_of(raw) == [
        "model_provider.default_chat_model_id: 'e' has role embeddings, not chat",
        "model_provider.default_embeddings_model_id: no model 'nope' is configured",
        "model_provider.default_audio_transcription_model_id: "
        "'c' has role chat, not audio_transcription",
    ]
    ok = validate_config(with_models(model("c"), default_chat_model_id="c"))
    assert ok.model_provider.default_chat_model_id == "c"


def test_default_model_id_checked_against_the_builtin_registry() -> None:
    raw: dict[str, Any] = {
        "version": 1,
        "model_provider": {"default_chat_model_id": "deterministic-embed"},
    }
    assert only_problem(raw) == (
        "model_provider.default_chat_model_id: 'deterministic-embed' has role embeddings, not chat"
    )
    raw["model_provider"]["default_chat_model_id"] = "deterministic"
    assert validate_config(raw).model_provider.default_chat_model_id == "deterministic"


# --- deployments and load balancing ------------------------------------------------------

DET2 = {"provider_id": "det2", "kind": "deterministic"}


def with_two_providers(*models: dict[str, Any], **model_provider: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "model_provider": {"providers": [DET, DET2], "models": list(models), **model_provider},
    }


def on_det2(model_id: str, role: str = "chat", **fields: Any) -> dict[str, Any]:
    return model(model_id, role, provider_id="det2", **fields)


def test_deployment_keys_default_to_one_equal_deployment_of_the_section_strategy() -> None:
    mp = validate_config(with_models(model("m"))).model_provider
    assert mp.load_balancing == "weighted"
    (m,) = mp.models
    assert (m.weight, m.priority, m.rpm_limit, m.tpm_limit) == (1.0, 0, 0, 0)
    assert (m.load_balancing, m.affinity) == ("", "")
    assert m.strategy(mp.load_balancing) == mp.strategy_for(m) == "weighted"


def test_deployment_keys_are_read() -> None:
    mp = validate_config(
        with_two_providers(
            model("m", weight=3, priority=0, rpm_limit=60, tpm_limit=90000),
            on_det2("m", weight=0.5, priority=1),
            load_balancing="usage",
        )
    ).model_provider
    a, b = mp.deployments_of("m")
    assert (a.provider_id, a.weight, a.priority, a.rpm_limit, a.tpm_limit) == (
        "det",
        3.0,
        0,
        60,
        90000,
    )
    assert (b.provider_id, b.weight, b.priority, b.rpm_limit, b.tpm_limit) == ("det2", 0.5, 1, 0, 0)
    assert mp.strategy_for(a) == mp.strategy_for(b) == "usage"
    assert mp.deployments_of("ghost") == []


@pytest.mark.parametrize("strategy", ["weighted", "least_busy", "latency", "usage"])
def test_every_strategy_is_accepted_in_the_section_and_per_model(strategy: str) -> None:
    mp = validate_config(
        with_models(model("m", load_balancing=strategy), model("n"), load_balancing=strategy)
    ).model_provider
    assert mp.load_balancing == strategy
    assert [mp.strategy_for(m) for m in mp.models] == [strategy, strategy]


def test_a_model_strategy_overrides_the_section() -> None:
    mp = validate_config(
        with_models(model("m", load_balancing="latency"), model("n"), load_balancing="least_busy")
    ).model_provider
    assert [mp.strategy_for(m) for m in mp.models] == ["latency", "least_busy"]


def test_unknown_strategy_is_refused_in_the_section_and_per_model() -> None:
    problem = only_problem(with_models(model("m"), load_balancing="round_robin"))
    assert problem.startswith("model_provider.load_balancing: "), problem
    assert "'weighted'" in problem and "'usage'" in problem and "round_robin" in problem
    problem = only_problem(with_models(model("m", load_balancing="fastest")))
    assert problem.startswith("model_provider.models[0].load_balancing: "), problem
    assert "'latency'" in problem and "fastest" in problem


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("weight", 0, "greater than 0"),
        ("weight", -2.5, "greater than 0"),
        ("weight", float("inf"), "finite"),
        ("weight", float("nan"), "finite"),
        ("priority", -1, "greater than or equal to 0"),
        ("rpm_limit", -1, "greater than or equal to 0"),
        ("tpm_limit", -100, "greater than or equal to 0"),
        ("priority", 1.5, "integer"),
        ("rpm_limit", "sixty", "integer"),
    ],
)
def test_bad_deployment_numbers_name_the_key(key: str, value: object, says: str) -> None:
    problem = only_problem(with_models(model("m", "chat", **{key: value})))
    assert problem.startswith(f"model_provider.models[0].{key}: "), problem
    assert says in problem, problem


@pytest.mark.parametrize("key", ["weight", "priority", "rpm_limit", "tpm_limit"])
def test_true_or_false_is_no_deployment_number(key: str) -> None:
    problem = only_problem(with_models(model("m", "chat", **{key: True})))
    assert problem.startswith(
        f"model_provider.models[0].{key}: must be a number, not true or false"
    ), problem


def test_prefix_affinity_is_for_chat_models_only() -> None:
    mp = validate_config(with_models(model("m", affinity="prefix"))).model_provider
    assert mp.models[0].affinity == "prefix"
    assert only_problem(with_models(model("e", "embeddings", affinity="prefix"))) == (
        'model_provider.models[0].affinity: "prefix" is only for chat models; '
        "this one has role embeddings"
    )
    assert only_problem(with_models(model("t", "audio_transcription", affinity="prefix"))) == (
        'model_provider.models[0].affinity: "prefix" is only for chat models; '
        "this one has role audio_transcription"
    )
    problem = only_problem(with_models(model("m", affinity="suffix")))
    assert problem.startswith("model_provider.models[0].affinity: "), problem
    assert "'prefix'" in problem and "suffix" in problem


def test_deployments_on_different_providers_are_one_model() -> None:
    raw = with_two_providers(
        model("m"), on_det2("m"), model("other", fallbacks=["m"]), default_chat_model_id="m"
    )
    mp = validate_config(raw).model_provider
    assert [d.provider_id for d in mp.deployments_of("m")] == ["det", "det2"]
    assert mp.default_chat_model_id == "m"


def test_deployments_of_one_model_must_share_its_role() -> None:
    raw = with_two_providers(model("m"), on_det2("m", "embeddings"))
    assert only_problem(raw) == (
        "model_provider.models[1].role: embeddings here but chat in models[0], another "
        "deployment of 'm'; all deployments of a model have one role"
    )


def test_a_deployment_on_a_provider_that_has_the_model_already_is_refused_with_three() -> None:
    det3 = {"provider_id": "det3", "kind": "deterministic"}
    raw = with_two_providers(model("m"), on_det2("m"), on_det2("m", weight=2))
    raw["model_provider"]["providers"].append(det3)
    assert only_problem(raw) == (
        "model_provider.models[2].model_id: 'm' is already on provider 'det2' as models[1]; "
        "deployments of one model must be on different providers"
    )


def test_model_wide_keys_written_on_one_deployment_hold_for_all() -> None:
    raw = with_two_providers(
        model("m", fallbacks=["b"], load_balancing="latency"),
        on_det2("m", affinity="prefix"),
        model("b"),
    )
    mp = validate_config(raw).model_provider
    for d in mp.deployments_of("m"):
        assert (d.fallbacks, d.load_balancing, d.affinity) == (["b"], "latency", "prefix")
    first, second = mp.deployments_of("m")
    assert first.fallbacks is not second.fallbacks  # each entry its own list
    # The same value on each deployment is fine too.
    raw = with_two_providers(
        model("m", load_balancing="usage"), on_det2("m", load_balancing="usage")
    )
    assert [d.load_balancing for d in validate_config(raw).model_provider.models] == [
        "usage",
        "usage",
    ]


def test_model_wide_keys_that_differ_between_deployments_are_refused() -> None:
    raw = with_two_providers(
        model("m", fallbacks=["a"], load_balancing="latency"),
        on_det2("m", fallbacks=["b"], load_balancing="usage"),
        model("a"),
        model("b"),
    )
    assert problems_of(raw) == [
        "model_provider.models[1].fallbacks: ['b'] here but ['a'] in models[0], another "
        "deployment of 'm'; it belongs to the model: set it on one deployment or the same on each",
        "model_provider.models[1].load_balancing: 'usage' here but 'latency' in models[0], "
        "another deployment of 'm'; it belongs to the model: set it on one deployment or the "
        "same on each",
    ]


def test_a_model_cannot_fall_back_to_itself_through_another_deployment() -> None:
    raw = with_two_providers(model("m"), on_det2("m", fallbacks=["m"]))
    # Named once, where it was written, not on the deployment that shares it.
    assert only_problem(raw) == (
        "model_provider.models[1].fallbacks[0]: a model cannot fall back to itself"
    )


def test_fallbacks_and_defaults_name_a_model_of_deployments() -> None:
    raw = with_two_providers(
        model("e", "embeddings"),
        on_det2("e", "embeddings"),
        model("c", fallbacks=["e"]),
        default_chat_model_id="e",
        default_embeddings_model_id="e",
    )
    assert problems_of(raw) == [
        "model_provider.models[2].fallbacks[0]: 'e' has role embeddings, not chat",
        "model_provider.default_chat_model_id: 'e' has role embeddings, not chat",
    ]


def test_load_balancing_is_settable_from_env(home: dict[str, str]) -> None:
    env = {**home, "PALYRA_MODEL_PROVIDER_LOAD_BALANCING": "least_busy"}
    assert load_config(None, env=env).config.model_provider.load_balancing == "least_busy"
    env["PALYRA_MODEL_PROVIDER_LOAD_BALANCING"] = "busiest"
    with pytest.raises(ConfigError) as info:
        load_config(None, env=env)
    assert info.value.problems[0].startswith(
        "model_provider.load_balancing (from env PALYRA_MODEL_PROVIDER_LOAD_BALANCING): "
    )


@pytest.mark.parametrize(
    "zone", ["Mars/Olympus_Mons", "", "../../etc/passwd", "UTC+2", "Europe/" + "x" * 300]
)
def test_cron_timezone_must_be_iana(zone: str) -> None:
    problem = only_problem({"version": 1, "cron": {"timezone": zone}})
    assert problem.startswith("cron.timezone: ")
    assert "IANA" in problem


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("history_retention_days", 10**15),
        ("run_lease_ms", 10**15),
        ("catch_up_window_ms", 10**15),
    ],
)
def test_cron_durations_are_bounded(key: str, value: int) -> None:
    # Unbounded, these overflowed 64-bit columns: the purge cutoff, every run's lease.
    problem = only_problem({"version": 1, "cron": {key: value}})
    assert problem.startswith(f"cron.{key}: ")
    assert "less than or equal" in problem


def test_cron_timezone_valid() -> None:
    assert validate_config({"version": 1, "cron": {"timezone": "Asia/Tokyo"}}).cron.timezone == (
        "Asia/Tokyo"
    )


def test_postgres_backend_needs_a_url() -> None:
    problem = only_problem({"version": 1, "state": {"backend": "postgres"}})
    assert problem.startswith("state.url: ")
    assert "postgresql://" in problem
    config = validate_config(
        {"version": 1, "state": {"backend": "postgres", "url": "postgresql://h/db"}}
    )
    assert config.state.url == "postgresql://h/db"


def test_state_backend_must_be_known() -> None:
    problem = only_problem({"version": 1, "state": {"backend": "mysql"}})
    assert problem.startswith("state.backend: ")
    assert "'sqlite'" in problem


def test_redis_url_scheme() -> None:
    problem = only_problem({"version": 1, "state": {"redis_url": "http://cache:6379"}})
    assert problem.startswith("state.redis_url: ")
    assert "redis://" in problem


def test_wrong_type_names_key() -> None:
    problem = only_problem({"version": 1, "model_provider": {"failover_enabled": "perhaps"}})
    assert problem.startswith("model_provider.failover_enabled: ")
    problem = only_problem({"version": 1, "model_provider": {"providers": {"a": 1}}})
    assert problem.startswith("model_provider.providers: ")


# --- plain API keys ---------------------------------------------------------------------

SECRET = "sk-proj-THIS-MUST-NOT-LEAK-0123456789"


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (with_providers(openai(api_key=SECRET)), "model_provider.providers[0].api_key"),
        ({"version": 1, "api_key": SECRET}, "api_key"),
        ({"version": 1, "daemon": {"api_key": SECRET}}, "daemon.api_key"),
        (
            {"version": 1, "auth": {"openai_oauth": {"api-key": SECRET}}},
            "auth.openai_oauth.api-key",
        ),
    ],
)
def test_plain_api_key_is_refused_without_echoing_it(raw: dict[str, Any], path: str) -> None:
    problem = only_problem(raw)
    assert problem.startswith(f"{path}: ")
    assert "palyra auth" in problem
    assert "api_key_vault_ref" in problem
    assert SECRET not in problem


def test_plain_api_key_in_a_file_is_refused_without_echoing_it(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.toml",
        f"""
        version = 1
        [[model_provider.providers]]
        provider_id = "oai"
        kind = "openai_compatible"
        api_key = "{SECRET}"
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert message.startswith(f"{path}: model_provider.providers[0].api_key: ")
    assert "palyra auth" in message
    assert "api_key_vault_ref" in message
    assert SECRET not in message


@pytest.mark.parametrize("field", ["api_key_env", "api_key_vault_ref"])
def test_a_key_pasted_into_a_credential_field_is_refused_and_not_echoed(field: str) -> None:
    problem = only_problem(with_providers(openai(**{field: SECRET})))
    assert problem.startswith(f"model_provider.providers[0].{field}: ")
    assert SECRET not in problem
    assert "THIS-MUST-NOT-LEAK" not in problem.upper()


# --- base URLs --------------------------------------------------------------------------


def test_https_base_url_is_accepted_and_trailing_slash_dropped() -> None:
    assert base_url_of("https://api.example.com/v1/") == "https://api.example.com/v1"


def test_default_base_url_per_kind() -> None:
    config = validate_config(
        with_providers(
            openai(),
            {"provider_id": "claude", "kind": "anthropic"},
            {"provider_id": "det", "kind": "deterministic"},
        )
    )
    urls = [p.base_url for p in config.model_provider.providers]
    assert urls == ["https://api.openai.com/v1", "https://api.anthropic.com", ""]


def test_http_to_a_public_host_is_refused() -> None:
    assert base_url_problem("http://api.example.com/v1") == (
        "model_provider.providers[0].base_url: plain http is only allowed to loopback; use https"
    )
    assert "plain http" in base_url_problem("http://api.example.com/v1", allow_private=True)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/v1", "http://localhost:8000/v1"])
def test_http_to_loopback_needs_allow_private(url: str) -> None:
    problem = base_url_problem(url)
    assert problem.startswith("model_provider.providers[0].base_url: ")
    assert "allow_private_base_url = true" in problem
    assert base_url_of(url, allow_private=True) == url


@pytest.mark.parametrize(
    "url",
    [
        "https://10.1.2.3/v1",
        "https://192.168.1.10/v1",
        "https://172.16.0.1/v1",
        "https://169.254.169.254/latest",
        "https://[::1]:8443/v1",
        "https://[fd00::1]/v1",
        "https://[::ffff:10.0.0.1]/v1",
        "https://0.0.0.0/v1",
        "https://100.64.0.1/v1",
        "https://localhost/v1",
        "https://api.localhost/v1",
    ],
)
def test_https_to_private_targets_needs_allow_private(url: str) -> None:
    problem = base_url_problem(url)
    assert problem.startswith("model_provider.providers[0].base_url: ")
    assert "allow_private_base_url = true" in problem
    assert base_url_of(url, allow_private=True) == url


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("https://[::127.0.0.1]/v1", "loopback"),  # IPv4-compatible: Python calls it global
        ("https://[64:ff9b::a9fe:a9fe]/latest", "link-local"),  # NAT64 of 169.254.169.254
        ("https://[2002:a00:1::]/v1", "private"),  # 6to4 of 10.0.0.1
        ("https://224.0.0.1/v1", "multicast"),  # Python calls it global too
    ],
)
def test_ip_literals_are_judged_by_the_address_they_reach(url: str, kind: str) -> None:
    problem = base_url_problem(url)
    assert f"is a {kind} address, not a public one; set allow_private_base_url = true" in problem


@pytest.mark.parametrize(
    "host", ["0x7f000001", "0xa9fea9fe", "012.0.0.1", "0x7f.1", "2130706433", "127.1"]
)
@pytest.mark.parametrize("allow_private", [False, True])
def test_numeric_hosts_in_other_spellings_are_refused(host: str, allow_private: bool) -> None:
    # getaddrinfo reads each of these as an IPv4 address (0xa9fea9fe is 169.254.169.254).
    assert base_url_problem(f"https://{host}/v1", allow_private) == (
        f"model_provider.providers[0].base_url: {host} is an IP address in a non-canonical "
        "spelling; write it as dotted decimal (a.b.c.d)"
    )


def test_a_name_is_not_resolved_while_loading_config() -> None:
    # What 127.0.0.1.nip.io reaches is known only when connecting: the egress guard refuses
    # it then (tests/test_egress.py).
    assert base_url_of("https://127.0.0.1.nip.io/v1") == "https://127.0.0.1.nip.io/v1"


def test_http_to_a_private_non_loopback_address_is_refused_even_when_allowed() -> None:
    assert "plain http" in base_url_problem("http://10.0.0.5/v1", allow_private=True)


def test_credentials_in_url_are_refused_and_not_echoed() -> None:
    problem = base_url_problem("https://user:hunter2secret@api.example.com/v1")
    assert problem == (
        "model_provider.providers[0].base_url: must not carry credentials; use api_key_vault_ref"
    )
    assert "hunter2secret" not in problem
    assert "hunter2secret" not in base_url_problem("https://hunter2secret@api.example.com/v1")


@pytest.mark.parametrize(
    "url", ["https://api.example.com/v1?key=x", "https://api.example.com/v1#x"]
)
def test_query_or_fragment_refused(url: str) -> None:
    assert base_url_problem(url) == (
        "model_provider.providers[0].base_url: must not have a query or fragment"
    )


@pytest.mark.parametrize(
    "url", ["ftp://api.example.com/v1", "file:///etc/passwd", "api.example.com"]
)
def test_non_http_scheme_refused(url: str) -> None:
    problem = base_url_problem(url)
    assert problem.startswith("model_provider.providers[0].base_url: scheme must be https")


@pytest.mark.parametrize("url", ["https://api.example.com:99999/v1", "https:///v1"])
def test_malformed_url_refused(url: str) -> None:
    assert base_url_problem(url).startswith("model_provider.providers[0].base_url: ")


# --- credentials ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sources",
    [
        {"api_key_vault_ref": "global/k", "auth_profile_id": "p"},
        {"api_key_vault_ref": "global/k", "api_key_env": "OPENAI_API_KEY"},
        {"auth_profile_id": "p", "api_key_env": "OPENAI_API_KEY"},
    ],
)
def test_at_most_one_credential_source(sources: dict[str, str]) -> None:
    assert only_problem(with_providers(openai(**sources))) == (
        "model_provider.providers[0].api_key_vault_ref, auth_profile_id and api_key_env: "
        "set at most one credential source"
    )


@pytest.mark.parametrize(
    "source",
    [
        {"api_key_vault_ref": "global/k"},
        {"auth_profile_id": "work"},
        {"api_key_env": "OPENAI_API_KEY"},
        {},
    ],
)
def test_one_credential_source_is_fine(source: dict[str, str]) -> None:
    assert validate_config(with_providers(openai(**source)))


@pytest.mark.parametrize(
    "ref", ["global/../x", "foo/bar", "global/", "agent:/k", "global/a\x00b", "/k", "global/a/b"]
)
def test_invalid_vault_refs_are_refused(ref: str) -> None:
    problem = only_problem(with_providers(openai(api_key_vault_ref=ref)))
    assert problem.startswith("model_provider.providers[0].api_key_vault_ref: vault ref")


@pytest.mark.parametrize(
    ("ref", "stored"),
    [
        ("GLOBAL/OpenAI_Key", "global/openai_key"),
        ("agent:Writer/k.1", "agent:writer/k.1"),
        ("profile:work/openai-api-key", "profile:work/openai-api-key"),
    ],
)
def test_valid_vault_refs_are_normalized_lower_case(ref: str, stored: str) -> None:
    config = validate_config(with_providers(openai(api_key_vault_ref=ref)))
    assert config.model_provider.providers[0].api_key_vault_ref == stored


def test_api_key_env_must_be_a_variable_name() -> None:
    problem = only_problem(with_providers(openai(api_key_env="1BAD-NAME")))
    assert problem.startswith("model_provider.providers[0].api_key_env: ")
    assert "environment variable" in problem


# --- state dir --------------------------------------------------------------------------


def test_state_dir_precedence(tmp_path: Path) -> None:
    env = {
        "HOME": str(tmp_path / "home"),
        "XDG_STATE_HOME": str(tmp_path / "xdg-state"),
        "PALYRA_STATE_DIR": str(tmp_path / "env-state"),
    }
    in_config = validate_config({"version": 1, "daemon": {"state_dir": str(tmp_path / "cfg")}})
    plain = validate_config({"version": 1})
    assert resolve_state_dir(in_config, env) == tmp_path / "cfg"
    assert resolve_state_dir(plain, env) == tmp_path / "env-state"
    del env["PALYRA_STATE_DIR"]
    assert resolve_state_dir(plain, env) == tmp_path / "xdg-state" / "palyra"
    del env["XDG_STATE_HOME"]
    assert resolve_state_dir(plain, env) == tmp_path / "home" / ".local" / "state" / "palyra"


def test_state_dir_from_env_key_and_flag(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "PALYRA_DAEMON_STATE_DIR": str(tmp_path / "a")}
    config = load_config(None, env=env).config
    assert resolve_state_dir(config, env) == tmp_path / "a"
    config = load_config(None, env=env, overrides={"daemon.state_dir": str(tmp_path / "b")}).config
    assert resolve_state_dir(config, env) == tmp_path / "b"


# --- costs, usage and telemetry (issue 15) ------------------------------------------------


def test_cost_usage_and_telemetry_defaults() -> None:
    config = validate_config(with_models(model("m")))
    m = config.model_provider.models[0]
    assert (m.input_cost_per_mtok, m.output_cost_per_mtok, m.cached_input_cost_per_mtok) == (
        0.0,
        0.0,
        0.0,
    )
    assert (config.usage.enabled, config.usage.retention_days, config.usage.log_payloads) == (
        True,
        90,
        False,
    )
    assert (config.telemetry.otlp_endpoint, config.telemetry.service_name) == ("", "palyra")


def test_cost_keys_are_read_per_deployment() -> None:
    config = validate_config(
        with_models(
            model(
                "m",
                input_cost_per_mtok=2.5,
                output_cost_per_mtok=10,
                cached_input_cost_per_mtok=1.25,
            )
        )
    )
    m = config.model_provider.models[0]
    assert (m.input_cost_per_mtok, m.output_cost_per_mtok, m.cached_input_cost_per_mtok) == (
        2.5,
        10.0,
        1.25,
    )


@pytest.mark.parametrize(
    "key", ["input_cost_per_mtok", "output_cost_per_mtok", "cached_input_cost_per_mtok"]
)
@pytest.mark.parametrize(
    ("value", "says"),
    [
        (-0.01, "greater than or equal to 0"),
        (float("inf"), "finite"),
        (float("nan"), "finite"),
        ("cheap", "number"),
        (True, "must be a number, not true or false"),
    ],
)
def test_bad_cost_keys_name_the_key(key: str, value: object, says: str) -> None:
    problem = only_problem(with_models(model("m", **{key: value})))
    assert problem.startswith(f"model_provider.models[0].{key}: "), problem
    assert says in problem, problem


def test_usage_section_is_read_and_checked() -> None:
    usage = validate_config(
        {"version": 1, "usage": {"enabled": False, "retention_days": 7, "log_payloads": True}}
    ).usage
    assert (usage.enabled, usage.retention_days, usage.log_payloads) == (False, 7, True)
    for days in (0, -1, 36_501):
        problem = only_problem({"version": 1, "usage": {"retention_days": days}})
        assert problem.startswith("usage.retention_days: "), problem
    assert only_problem({"version": 1, "usage": {"retention_days": True}}) == (
        "usage.retention_days: must be a number, not true or false (got True)"
    )
    assert only_problem({"version": 1, "usage": {"keep": 3}}) == "usage.keep: unknown key"


@pytest.mark.parametrize(
    "endpoint", ["http://127.0.0.1:4318", "https://otel.example.com/v1/traces", "HTTP://c:4318"]
)
def test_otlp_endpoint_takes_http_urls(endpoint: str) -> None:
    telemetry = validate_config(
        {"version": 1, "telemetry": {"otlp_endpoint": endpoint, "service_name": "gw-eu"}}
    ).telemetry
    assert (telemetry.otlp_endpoint, telemetry.service_name) == (endpoint, "gw-eu")


@pytest.mark.parametrize("endpoint", ["127.0.0.1:4318", "grpc://c:4317", "http://", "collector"])
def test_otlp_endpoint_must_be_an_http_url(endpoint: str) -> None:
    problem = only_problem({"version": 1, "telemetry": {"otlp_endpoint": endpoint}})
    assert problem.startswith("telemetry.otlp_endpoint: must be an http(s) URL"), problem


def test_service_name_must_not_be_empty() -> None:
    problem = only_problem({"version": 1, "telemetry": {"service_name": ""}})
    assert problem.startswith("telemetry.service_name: "), problem


def test_usage_and_telemetry_are_settable_from_env(home: dict[str, str]) -> None:
    env = {
        **home,
        "PALYRA_USAGE_ENABLED": "false",
        "PALYRA_USAGE_RETENTION_DAYS": "30",
        "PALYRA_USAGE_LOG_PAYLOADS": "true",
        "PALYRA_TELEMETRY_OTLP_ENDPOINT": "http://127.0.0.1:4318",
        "PALYRA_TELEMETRY_SERVICE_NAME": "palyra-eu",
    }
    config = load_config(None, env=env).config
    assert (config.usage.enabled, config.usage.retention_days, config.usage.log_payloads) == (
        False,
        30,
        True,
    )
    assert config.telemetry.otlp_endpoint == "http://127.0.0.1:4318"
    assert config.telemetry.service_name == "palyra-eu"
    with pytest.raises(ConfigError) as info:
        load_config(None, env={**home, "PALYRA_TELEMETRY_OTLP_ENDPOINT": "localhost:4318"})
    assert info.value.problems[0].startswith(
        "telemetry.otlp_endpoint (from env PALYRA_TELEMETRY_OTLP_ENDPOINT): "
    ), info.value.problems


def test_config_for_display_redacts_an_otlp_endpoint_password() -> None:
    config = validate_config(
        {"version": 1, "telemetry": {"otlp_endpoint": "https://u:otel-s3cret@otel.example.com"}}
    )
    assert config_for_display(config)["telemetry"]["otlp_endpoint"] == (
        "https://u:<redacted>@otel.example.com"
    )


# --- display ----------------------------------------------------------------------------


def test_config_for_display_redacts_url_passwords() -> None:
    config = validate_config(
        {
            "version": 1,
            "state": {
                "backend": "postgres",
                "url": "postgresql://palyra:pg-s3cret@db.internal:5432/palyra",
                "redis_url": "redis://:redis-s3cret@cache:6379/0",
            },
        }
    )
    shown = config_for_display(config)
    assert shown["state"]["url"] == "postgresql://palyra:<redacted>@db.internal:5432/palyra"
    assert shown["state"]["redis_url"] == "redis://:<redacted>@cache:6379/0"
    assert "s3cret" not in repr(shown)
    revealed = config_for_display(config, show_secrets=True)
    assert revealed["state"]["url"] == "postgresql://palyra:pg-s3cret@db.internal:5432/palyra"
    assert revealed["state"]["redis_url"] == "redis://:redis-s3cret@cache:6379/0"
    # Displaying does not change the config itself.
    assert config.state.url == "postgresql://palyra:pg-s3cret@db.internal:5432/palyra"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:p@ss@h/db", "postgresql://u:<redacted>@h/db"),
        ("POSTGRESQL://u:pw@h/db", "POSTGRESQL://u:<redacted>@h/db"),
        (
            "postgresql://h/db?sslmode=require&password=pw",
            "postgresql://h/db?sslmode=require&password=<redacted>",
        ),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql://h:5432/db", "postgresql://h:5432/db"),
    ],
)
def test_display_redaction_edge_cases(url: str, shown: str) -> None:
    config = validate_config({"version": 1, "state": {"backend": "postgres", "url": url}})
    assert config_for_display(config)["state"]["url"] == shown


def test_config_for_display_is_plain_json_data() -> None:
    import json

    data = config_for_display(validate_config({"version": 1}))
    assert json.loads(json.dumps(data)) == data
    assert data["model_provider"]["providers"][0]["kind"] == "deterministic"
    assert PalyraConfig.model_validate(data).daemon.port == 7142


# --- the docs' examples -----------------------------------------------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs"


def toml_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```toml\n(.*?)^```$", markdown, flags=re.M | re.S)


def test_toml_blocks_are_found_however_many() -> None:
    text = "a\n```toml\nversion = 1\n```\nb\n```sh\nx\n```\n```toml\n[x]\ny = 2\n```\n"
    assert toml_blocks(text) == ["version = 1\n", "[x]\ny = 2\n"]


def test_every_toml_block_of_the_routing_docs_is_a_valid_config() -> None:
    blocks = toml_blocks((DOCS / "routing.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 2, "docs/routing.md lost its examples"
    for block in blocks:
        validate_config(tomllib.loads(block))


def test_the_routing_docs_worked_example_is_what_it_says() -> None:
    blocks = toml_blocks((DOCS / "routing.md").read_text(encoding="utf-8"))
    (example,) = [b for b in blocks if "[[model_provider.models]]" in b]
    mp = validate_config(tomllib.loads(example)).model_provider
    chat = mp.deployments_of("chat")
    assert [(d.provider_id, d.weight, d.priority) for d in chat] == [
        ("openai-a", 3.0, 0),
        ("openai-b", 1.0, 0),
        ("azure-eu", 2.0, 0),
        ("vllm", 1.0, 1),
    ]
    assert all(d.rpm_limit > 0 and d.tpm_limit > 0 for d in chat[:3])
    # Written on one deployment, the model-wide keys hold for all four.
    assert {(tuple(d.fallbacks), d.affinity, mp.strategy_for(d)) for d in chat} == {
        (("claude",), "prefix", "usage")
    }
    assert [p.base_url for p in mp.providers[:2]] == ["https://api.openai.com/v1"] * 2
    vllm = mp.provider("vllm")
    assert vllm is not None and vllm.allow_private_base_url


def test_every_toml_block_of_the_usage_docs_is_a_valid_config() -> None:
    blocks = toml_blocks((DOCS / "usage.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 3, "docs/usage.md lost its examples"
    configs = [validate_config(tomllib.loads(block)) for block in blocks]
    fast = next(m for c in configs for m in c.model_provider.models if m.model_id == "fast")
    assert (fast.input_cost_per_mtok, fast.cached_input_cost_per_mtok) == (0.15, 0.075)
    assert any(c.telemetry.otlp_endpoint == "http://127.0.0.1:4318" for c in configs)


# --- every problem in one pass (issue 16) ------------------------------------------------

EVERY_KIND_OF_PROBLEM = """
version = 1
[daemon]
port = 70000
[[model_provider.providers]]
provider_id = "oai"
kind = "openai_compatible"
api_key = "sk-plain-0123456789abcdef"
bse_url = "https://api.openai.com/v1"
[[model_provider.models]]
model_id = "m"
provider_id = "oai"
max_output_tokens = 9
max_context_tokens = 5
"""


def test_a_plain_key_does_not_hide_the_other_problems(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", EVERY_KIND_OF_PROBLEM)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.problems == [
        "model_provider.providers[0].api_key: plain API keys are not allowed in config; store "
        "the key with `palyra auth openai|anthropic api-key` or `palyra vault set` and "
        "reference it with api_key_vault_ref (or api_key_env)",
        "daemon.port: input should be less than or equal to 65535 (got 70000)",
        "model_provider.providers[0].bse_url: unknown key",
        "model_provider.models[0].max_output_tokens: must not exceed max_context_tokens",
    ]
    assert "sk-plain" not in str(info.value)


def test_env_problems_and_file_problems_come_together(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", "version = 1\n[daemon]\nprot = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(
            path,
            env={
                "PALYRA_CRON_TIMEZONE": "Europe/Nowhere",
                "PALYRA_AUTH_OPENAI_OAUTH_SCOPES": "[not json",
            },
        )
    assert info.value.problems == [
        "auth.openai_oauth.scopes (from env PALYRA_AUTH_OPENAI_OAUTH_SCOPES): not a JSON list",
        "daemon.prot: unknown key",
        "cron.timezone (from env PALYRA_CRON_TIMEZONE): unknown IANA time zone 'Europe/Nowhere'",
    ]


def test_the_default_output_allowance_fits_a_small_window() -> None:
    # max_output_tokens never written: its default (16384) is lowered, not an error.
    config = validate_config(with_models(model("m", max_context_tokens=300)))
    (small,) = config.model_provider.models
    assert small.max_output_tokens == 150  # half the window: the other half for the prompt
    big = validate_config(with_models(model("m", max_context_tokens=100_000)))
    assert big.model_provider.models[0].max_output_tokens == 16384


def test_config_validate_lists_every_problem_one_a_line_and_takes_config(
    tmp_path: Path,
) -> None:
    path = write(tmp_path / "config.toml", EVERY_KIND_OF_PROBLEM)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PALYRA_", "XDG_"))}
    env["HOME"] = str(tmp_path)
    palyra = str(Path(sys.executable).with_name("palyra"))
    for args in (["config", "validate", "--config", str(path)], ["config", "validate", str(path)]):
        result = subprocess.run(
            [palyra, *args], env=env, capture_output=True, text=True, timeout=30, check=False
        )
        assert result.returncode == 1, result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 4, result.stderr
        assert all(line.startswith(f"palyra: error: config: {path}: ") for line in lines)
        assert lines[2].endswith("model_provider.providers[0].bse_url: unknown key")
    good = write(tmp_path / "good.toml", "version = 1\n")
    result = subprocess.run(
        [palyra, "config", "validate", "--config", str(good)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"ok: {good}: ")


def test_references_are_checked_even_when_another_section_is_wrong() -> None:
    problems = problems_of(
        {
            "version": 1,
            "daemon": {"prot": 1},
            "model_provider": {"default_chat_model_id": "nope"},
        }
    )
    assert problems == [
        "daemon.prot: unknown key",
        "model_provider.default_chat_model_id: no model 'nope' is configured",
    ]
