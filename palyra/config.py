"""Configuration: the TOML schema, where the file is found, and how env and flags override it.

Precedence of values: built-in defaults < file < `PALYRA_<SECTION>_<KEY>` env < flags.
Every error names the dotted key and the rule it broke.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from palyra.egress import address_class, ip_literal, is_numeric_spelling
from palyra.types import ModelProviderKind, ProviderModelRole
from palyra.vault.ref import VaultRefError, parse_vault_ref

DEFAULT_PORT = 7142
DETERMINISTIC_PROVIDER_ID = "deterministic-primary"
_PROVIDER_ID = re.compile(r"[a-z0-9._:-]{1,128}")


class ConfigError(Exception):
    """One or more problems, each `dotted.key: rule`."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        prefix = f"{source}: " if source else ""
        super().__init__(prefix + "; ".join(problems))


def _takes_number(annotation: Any) -> bool:
    args = typing.get_args(annotation) or (annotation,)
    return bool not in args and any(arg in (int, float) for arg in args)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # Pydantic would take `port = true` as 1: a typo that should be an error.
        if (
            isinstance(value, bool)
            and info.field_name is not None
            and _takes_number(cls.model_fields[info.field_name].annotation)
        ):
            raise ValueError("must be a number, not true or false")
        return value


class DaemonConfig(_Section):
    bind: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535)
    state_dir: str = ""
    public_base_url: str = ""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    max_request_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    shutdown_grace_ms: int = Field(default=30000, ge=0)
    # Processes serving the one port (palyra.workers); "auto": one per core this process may
    # run on. 1 is the single-process daemon, with nothing in front of it.
    workers: int | Literal["auto"] = 1

    @field_validator("workers", mode="before")
    @classmethod
    def _check_workers(cls, value: Any) -> int | str:
        # Checked by hand, before pydantic's union: its errors for `int | "auto"` name both
        # members, and env overrides arrive as strings ("2", "auto").
        text = value.strip().lower() if isinstance(value, str) else None
        if text == "auto":
            return "auto"
        if text is not None and text.isdigit():
            value = int(text)
        if type(value) is not int or value < 1:
            raise ValueError('must be a whole number of processes, 1 or more, or "auto"')
        return value

    def worker_count(self) -> int:
        """`workers` as a number: "auto" is the cores this process may run on."""
        if self.workers != "auto":
            return int(self.workers)
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not on Linux
            return max(1, os.cpu_count() or 1)

    @field_validator("public_base_url")
    @classmethod
    def _check_public_url(cls, value: str) -> str:
        if value:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must be an http(s) URL such as https://palyra.example.com")
        return value.rstrip("/")


def _scheme_in(url: str, *schemes: str) -> bool:
    """URL schemes are case-insensitive: `POSTGRESQL://` is as good as `postgresql://`."""
    scheme, sep, _ = url.partition("://")
    return bool(sep) and scheme.lower() in schemes


class StateConfig(_Section):
    backend: Literal["sqlite", "postgres"] = "sqlite"
    url: str = ""
    redis_url: str = ""

    @model_validator(mode="after")
    def _check_urls(self) -> StateConfig:
        if self.backend == "postgres" and not _scheme_in(self.url, "postgresql", "postgres"):
            raise ValueError('url: must be postgresql://... when backend = "postgres"')
        if self.redis_url and not _scheme_in(self.redis_url, "redis", "rediss", "unix"):
            raise ValueError("redis_url: must be redis://, rediss:// or unix://")
        return self


class ProviderConfig(_Section):
    provider_id: str
    kind: ModelProviderKind
    base_url: str = ""
    api_key_vault_ref: str = ""
    auth_profile_id: str = ""
    api_key_env: str = ""
    allow_private_base_url: bool = False
    enabled: bool = True
    discovery: bool = True
    request_timeout_ms: int | None = Field(default=None, ge=1)
    max_retries: int | None = Field(default=None, ge=0, le=10)
    retry_backoff_ms: int | None = Field(default=None, ge=0)
    circuit_breaker_failure_threshold: int | None = Field(default=None, ge=1)
    circuit_breaker_cooldown_ms: int | None = Field(default=None, ge=1)
    # The deterministic provider's embedding width when a request names none.
    embedding_dimensions: int = Field(default=64, ge=1, le=8192)
    # openai_compatible: `POST /v1/responses` is sent to the upstream's own `/responses` as
    # the client wrote it, not translated to chat completions.
    responses_passthrough: bool = False

    @field_validator("provider_id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        if len(value) > 128:
            raise ValueError(f"is {len(value)} characters long; at most 128")
        if not _PROVIDER_ID.fullmatch(value):
            raise ValueError("may only hold lower-case a-z, 0-9 and . _ : -")
        return value

    @field_validator("api_key_env")
    @classmethod
    def _check_env_name(cls, value: str) -> str:
        if value and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            # Often the key itself pasted here: say so, and never echo it.
            raise ValueError(
                "must name an environment variable ([A-Za-z_][A-Za-z0-9_]*) that holds the key, "
                "not the key itself"
            )
        return value

    @field_validator("api_key_vault_ref")
    @classmethod
    def _check_vault_ref(cls, value: str) -> str:
        if not value:
            return value
        try:
            return str(parse_vault_ref(value))
        except VaultRefError as exc:
            # The text may be an API key pasted into the wrong field: never echo it.
            raise ValueError(str(exc).replace(f" {value!r}", "")) from None

    @model_validator(mode="after")
    def _check(self) -> ProviderConfig:
        sources = [s for s in (self.api_key_vault_ref, self.auth_profile_id, self.api_key_env) if s]
        if len(sources) > 1:
            raise ValueError(
                "api_key_vault_ref, auth_profile_id and api_key_env: "
                "set at most one credential source"
            )
        # Imported here: the kinds' specs name the provider classes, which are built from
        # this module's types (config is imported first, and imports no provider).
        from palyra.models.kinds import spec_for

        default_base_url = spec_for(self.kind).default_base_url
        if default_base_url is None:  # a kind with no upstream
            return self
        if not self.base_url:
            self.base_url = default_base_url
        self.base_url = check_base_url(self.base_url, self.allow_private_base_url)
        return self


def check_base_url(url: str, allow_private: bool) -> str:
    """https anywhere; http only to loopback; loopback and private targets only when allowed."""
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        raise ValueError("base_url: is not a valid URL (bad host or port)") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(
            f"base_url: scheme must be https (or http to loopback), got {parts.scheme!r}"
        )
    if not parts.hostname:
        raise ValueError("base_url: has no host")
    if parts.username or parts.password or "@" in parts.netloc:
        raise ValueError("base_url: must not carry credentials; use api_key_vault_ref")
    if not port_ok:
        raise ValueError("base_url: port must be 1-65535")
    if parts.query or parts.fragment:
        raise ValueError("base_url: must not have a query or fragment")
    host = parts.hostname.rstrip(".")
    if is_numeric_spelling(host):
        # The system resolver takes these for IPv4 addresses (0x7f000001 is 127.0.0.1): say
        # which address is meant. The connect-time guard refuses them anyway.
        raise ValueError(
            f"base_url: {host} is an IP address in a non-canonical spelling; "
            "write it as dotted decimal (a.b.c.d)"
        )
    # A name is not resolved here (no blocking DNS while loading config): what it reaches is
    # checked when the daemon connects (palyra.egress). Only localhost names are known.
    address = ip_literal(host)
    if address is not None:
        kind = address_class(address)
    else:
        kind = "loopback" if host == "localhost" or host.endswith(".localhost") else None
    if parts.scheme == "http" and kind != "loopback":
        raise ValueError("base_url: plain http is only allowed to loopback; use https")
    if kind is not None and not allow_private:
        raise ValueError(
            f"base_url: {host} is a {kind} address, not a public one; "
            "set allow_private_base_url = true"
        )
    return url.rstrip("/")


LoadBalancing = Literal["weighted", "least_busy", "latency", "usage"]


class ModelConfig(_Section):
    """One `[[model_provider.models]]` entry: a model on one provider, i.e. one deployment.

    Entries sharing a `model_id` (on different providers) are deployments of one model.
    """

    model_id: str = Field(pattern=r"^[^\s]{1,256}$")
    provider_id: str
    upstream_model: str = ""
    role: ProviderModelRole = ProviderModelRole.CHAT
    enabled: bool = True
    vision: bool = True
    tool_calls: bool = True
    json_mode: bool = True
    max_context_tokens: int = Field(default=128000, ge=1)
    max_output_tokens: int = Field(default=16384, ge=1)
    cost_tier: Literal["low", "standard", "premium"] = "standard"
    latency_tier: Literal["low", "standard", "high"] = "standard"
    fallbacks: list[str] = Field(default_factory=list)
    # A deployment's share of its priority group under the weighted strategy.
    weight: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    # Lower is preferred: deployments with a larger number are used only when every one with
    # a smaller number cannot take the request.
    priority: int = Field(default=0, ge=0)
    rpm_limit: int = Field(default=0, ge=0)  # 0: no limit
    tpm_limit: int = Field(default=0, ge=0)
    # Model-wide (shared by all deployments of the model): "" means `[model_provider]`'s.
    load_balancing: Literal["", "weighted", "least_busy", "latency", "usage"] = ""
    affinity: Literal["", "prefix"] = ""
    # USD per million tokens, per deployment (one model may cost differently on two providers).
    # All 0: the built-in price table (palyra.pricing) by upstream name, else the cost is unknown.
    input_cost_per_mtok: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    output_cost_per_mtok: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    cached_input_cost_per_mtok: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    # Set on entries found by discovery rather than written in the file.
    discovered: bool = Field(default=False, exclude=True)
    # Model-wide keys this entry took from a sibling deployment (errors name where one was written).
    _inherited: set[str] = PrivateAttr(default_factory=set)

    @property
    def upstream_name(self) -> str:
        return self.upstream_model or self.model_id

    def strategy(self, default: str) -> str:
        """The load-balancing strategy of this model: its own, else `default` (the section's)."""
        return self.load_balancing or default

    @model_validator(mode="after")
    def _check_limits(self) -> ModelConfig:
        if self.max_output_tokens > self.max_context_tokens:
            if "max_output_tokens" in self.model_fields_set:
                raise ValueError("max_output_tokens: must not exceed max_context_tokens")
            # The default allowance, a key the user never wrote, is made to fit: half the
            # window, the other half left for the prompt (the whole window would leave a
            # request that sets no max_tokens no room for any prompt).
            self.max_output_tokens = max(1, self.max_context_tokens // 2)
        if self.affinity and self.role != ProviderModelRole.CHAT:
            # Prompt caches key on a conversation's leading messages: only chat has them.
            raise ValueError(
                f'affinity: "{self.affinity}" is only for chat models; this one has role '
                f"{self.role}"
            )
        return self


# Keys that belong to the model, not to one deployment: written on any one deployment (or the
# same on each), they hold for all.
_MODEL_WIDE = ("fallbacks", "load_balancing", "affinity")


class ModelProviderConfig(_Section):
    default_chat_model_id: str = ""
    default_embeddings_model_id: str = ""
    default_audio_transcription_model_id: str = ""
    failover_enabled: bool = True
    request_timeout_ms: int = Field(default=60000, ge=1)
    max_retries: int = Field(default=2, ge=0, le=10)
    retry_backoff_ms: int = Field(default=150, ge=0)
    circuit_breaker_failure_threshold: int = Field(default=3, ge=1)
    circuit_breaker_cooldown_ms: int = Field(default=30000, ge=1)
    discovery_ttl_ms: int = Field(default=300000, ge=1000)
    health_ttl_ms: int = Field(default=60000, ge=1000)
    # A probe slower than this marks the provider `degraded` (still used, but noticed).
    health_degraded_latency_ms: int = Field(default=2000, ge=1)
    max_model_tokens_per_event: int = Field(default=0, ge=0)
    load_balancing: LoadBalancing = "weighted"
    providers: list[ProviderConfig] = Field(default_factory=list)
    models: list[ModelConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _builtin_registry(self) -> ModelProviderConfig:
        # No providers at all means the embedded default: everything works offline.
        if not self.providers and not self.models:
            self.providers = [
                ProviderConfig(
                    provider_id=DETERMINISTIC_PROVIDER_ID, kind=ModelProviderKind.DETERMINISTIC
                )
            ]
            self.models = [
                ModelConfig(model_id="deterministic", provider_id=DETERMINISTIC_PROVIDER_ID),
                ModelConfig(
                    model_id="deterministic-embed",
                    provider_id=DETERMINISTIC_PROVIDER_ID,
                    role=ProviderModelRole.EMBEDDINGS,
                    max_context_tokens=8192,
                    max_output_tokens=1,
                ),
                ModelConfig(
                    model_id="deterministic-transcribe",
                    provider_id=DETERMINISTIC_PROVIDER_ID,
                    role=ProviderModelRole.AUDIO_TRANSCRIPTION,
                ),
            ]
        return self

    @model_validator(mode="after")
    def _share_model_wide_keys(self) -> ModelProviderConfig:
        # A model-wide key written on one deployment holds for its siblings, so any deployment
        # tells the model's fallbacks and strategy. Differing values are left for
        # _check_references to report.
        groups: dict[str, list[ModelConfig]] = {}
        for model in self.models:
            groups.setdefault(model.model_id, []).append(model)
        for group in groups.values():
            if len(group) < 2:
                continue
            for key in _MODEL_WIDE:
                given = [getattr(m, key) for m in group if getattr(m, key)]
                if given and all(value == given[0] for value in given):
                    for m in group:
                        if not getattr(m, key):
                            setattr(m, key, copy.copy(given[0]))
                            m._inherited.add(key)
        return self

    def provider(self, provider_id: str) -> ProviderConfig | None:
        return next((p for p in self.providers if p.provider_id == provider_id), None)

    def deployments_of(self, model_id: str) -> list[ModelConfig]:
        """Every entry (deployment) of `model_id`, in file order; empty when none."""
        return [m for m in self.models if m.model_id == model_id]

    def strategy_for(self, model: ModelConfig) -> str:
        """The load-balancing strategy that picks among `model`'s deployments."""
        return model.strategy(self.load_balancing)

    def settings_for(self, provider: ProviderConfig) -> ProviderSettings:
        """The provider's effective timeouts and retry settings: its overrides, else ours."""
        return ProviderSettings(
            request_timeout_ms=provider.request_timeout_ms or self.request_timeout_ms,
            max_retries=self.max_retries if provider.max_retries is None else provider.max_retries,
            retry_backoff_ms=(
                self.retry_backoff_ms
                if provider.retry_backoff_ms is None
                else provider.retry_backoff_ms
            ),
            circuit_breaker_failure_threshold=(
                provider.circuit_breaker_failure_threshold or self.circuit_breaker_failure_threshold
            ),
            circuit_breaker_cooldown_ms=(
                provider.circuit_breaker_cooldown_ms or self.circuit_breaker_cooldown_ms
            ),
        )


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    request_timeout_ms: int
    max_retries: int
    retry_backoff_ms: int
    circuit_breaker_failure_threshold: int
    circuit_breaker_cooldown_ms: int


class OpenAIOAuthConfig(_Section):
    authorization_endpoint: str = "https://auth.openai.com/oauth/authorize"
    token_endpoint: str = "https://auth.openai.com/oauth/token"
    revocation_endpoint: str = ""
    client_id: str = ""
    scopes: list[str] = Field(
        default_factory=lambda: ["openid", "profile", "email", "offline_access"]
    )
    audience: str = ""


class AuthConfig(_Section):
    openai_oauth: OpenAIOAuthConfig = Field(default_factory=OpenAIOAuthConfig)


class CronConfig(_Section):
    enabled: bool = True
    timezone: str = "UTC"
    max_concurrent_runs: int = Field(default=4, ge=1, le=256)
    # Upper bounds keep every cutoff and deadline inside a 64-bit column (a retention of
    # 10**15 days made the purge cutoff overflow and the scheduler fail to start).
    history_retention_days: int = Field(default=30, ge=1, le=36_500)
    catch_up_window_ms: int = Field(default=86_400_000, ge=0, le=366 * 86_400_000)
    # How long a running run stays its daemon's without a renewal; a daemon that dies is
    # noticed by the others this long after its last renewal (renewed every third of it).
    run_lease_ms: int = Field(default=60_000, ge=3_000, le=86_400_000)

    @field_validator("timezone")
    @classmethod
    def _check_zone(cls, value: str) -> str:
        # The longest IANA name is 32 characters; a long one makes ZoneInfo raise OSError.
        if len(value) > 64:
            raise ValueError(f"unknown IANA time zone {value[:64]!r}... (at most 64 characters)")
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f"unknown IANA time zone {value!r}") from None
        return value


class AgentsConfig(_Section):
    file: str = ""


class UsageConfig(_Section):
    enabled: bool = True
    # Bounded like cron's retention: the purge cutoff must stay inside a 64-bit column.
    retention_days: int = Field(default=90, ge=1, le=36_500)
    # Prompt and answer text in the ledger: off, since they may hold anything a client sent.
    log_payloads: bool = False


class TelemetryConfig(_Section):
    otlp_endpoint: str = ""  # empty: no traces
    service_name: str = Field(default="palyra", min_length=1, max_length=256)

    @field_validator("otlp_endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        if value:
            parts = urlsplit(value)
            if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
                raise ValueError(
                    "must be an http(s) URL of an OTLP/HTTP receiver such as "
                    "http://127.0.0.1:4318, or empty for no traces"
                )
        return value


class PalyraConfig(_Section):
    version: Literal[1]
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    model_provider: ModelProviderConfig = Field(default_factory=ModelProviderConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    cron: CronConfig = Field(default_factory=CronConfig)
    agents: AgentsConfig = Field(default_factory=AgentsConfig)
    usage: UsageConfig = Field(default_factory=UsageConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    config: PalyraConfig
    path: Path | None  # None: built-in defaults, no file
    text: str | None = None  # the file's text as read: what palyrad's workers are all handed


# --- finding and loading ---------------------------------------------------------------


def find_config_path(
    explicit: str | os.PathLike[str] | None, env: Mapping[str, str]
) -> Path | None:
    """`--config` > `PALYRA_CONFIG` > `$XDG_CONFIG_HOME/palyra/config.toml`; None when absent.

    A path given explicitly must exist; the XDG default may be missing.
    """
    if explicit:
        return Path(explicit).expanduser()
    if env.get("PALYRA_CONFIG"):
        return Path(env["PALYRA_CONFIG"]).expanduser()
    base = Path(env.get("XDG_CONFIG_HOME") or Path(env.get("HOME", "~")).expanduser() / ".config")
    candidate = base / "palyra" / "config.toml"
    return candidate if candidate.exists() else None


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    text: str | None = None,
) -> LoadedConfig:
    """Read, merge and validate. `overrides` are flag values as `{"daemon.port": 8000}`.
    `text`: the file's text, already read (a worker is handed its master's), parsed instead
    of reading the file again, which may have changed since."""
    env = os.environ if env is None else env
    found = find_config_path(path, env)
    raw: dict[str, Any] = {"version": 1}
    source = None
    if found is not None:
        source = str(found)
        if text is None:
            text = read_text(found)
        raw = parse_toml(text, found)
    problems: list[str] = []
    # Where each overridden value came from, so an error can say which env var or flag to fix.
    origins: dict[str, str] = {}
    for dotted, value in env_overrides(env, problems).items():
        if _set_dotted(raw, dotted, value):
            origins[dotted] = f"from env {_ENV_BY_DOTTED[dotted]}"
    for dotted, value in (overrides or {}).items():
        if value is not None and _set_dotted(raw, dotted, value):
            origins[dotted] = "from the command line"
    try:
        config = validate_config(raw, source)
    except ConfigError as exc:
        problems += [_blame(p, origins) for p in exc.problems]
    if problems:
        raise ConfigError(problems, source)
    return LoadedConfig(config, found, text if found is not None else None)


def _blame(problem: str, origins: Mapping[str, str]) -> str:
    """`daemon.port: ...` -> `daemon.port (from env PALYRA_DAEMON_PORT): ...`."""
    for dotted, origin in origins.items():
        for sep in (": ", "["):
            if problem.startswith(dotted + sep):
                return f"{dotted} ({origin}){problem[len(dotted) :]}"
    return problem


def read_toml(path: Path) -> dict[str, Any]:
    return parse_toml(read_text(path), path)


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(["file not found"], str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot read: {exc}"], str(path)) from None


def parse_toml(text: str, path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"invalid TOML: {exc}"], str(path)) from None


def validate_config(raw: Mapping[str, Any], source: str | None = None) -> PalyraConfig:
    """The config, or ConfigError listing every problem found in one pass: a plain key, the
    version, the schema's (all of them, pydantic reports each field), then the references
    between sections once the schema holds."""
    problems: list[str] = []
    # Reported once here, then left out: the schema would call each one an unknown key too.
    raw = _without_plain_keys(raw, problems)
    if "version" not in raw:
        problems.append("version: required; put `version = 1` at the top")
    else:
        version = raw["version"]
        if type(version) is not int or version != 1:
            # Checked by hand: pydantic would take `true` or `1.0` for the literal 1.
            shown = (
                repr(version) if isinstance(version, int | float | str) else type(version).__name__
            )
            problems.append(f"version: must be 1, the only config format (got {shown})")
    try:
        config = PalyraConfig.model_validate({**raw, "version": 1})
    except ValidationError as exc:
        problems += _describe(exc)
        if not any(err["loc"][:1] == ("model_provider",) for err in exc.errors()):
            # Its own keys hold: what they refer to can still be checked.
            with contextlib.suppress(ValidationError):
                section = ModelProviderConfig.model_validate(raw.get("model_provider", {}))
                problems += _check_references(section)
        raise ConfigError(problems, source) from None
    problems += _check_references(config.model_provider)
    if problems:
        raise ConfigError(problems, source)
    return config


def _without_plain_keys(node: Any, problems: list[str], path: str = "") -> Any:
    """`node` without any `api_key`, each one found named in `problems`."""
    if isinstance(node, Mapping):
        kept: dict[Any, Any] = {}
        for key, value in node.items():
            here = f"{path}.{key}" if path else str(key)
            if str(key).lower().replace("-", "_") in ("api_key", "apikey"):
                problems.append(
                    f"{here}: plain API keys are not allowed in config; store the key with "
                    "`palyra auth openai|anthropic api-key` or `palyra vault set` and "
                    "reference it with api_key_vault_ref (or api_key_env)"
                )
                continue
            kept[key] = _without_plain_keys(value, problems, here)
        return kept
    if isinstance(node, list):
        return [_without_plain_keys(item, problems, f"{path}[{i}]") for i, item in enumerate(node)]
    return node


def _describe(exc: ValidationError) -> list[str]:
    problems: list[str] = []
    seen: set[str] = set()
    for err in exc.errors():
        path = _dotted(err["loc"])
        if path in seen:
            continue  # unions report once per member; the first says enough
        seen.add(path)
        kind = err["type"]
        if kind == "extra_forbidden":
            problems.append(f"{path}: unknown key")
            continue
        if kind == "missing":
            problems.append(f"{path}: required")
            continue
        message = str(err["msg"]).removeprefix("Value error, ")
        # Model-level validators name their own key (`base_url: ...`); join it to the path.
        field, sep, rest = message.partition(": ")
        if sep and re.fullmatch(r"[a-z_]+(, [a-z_]+)*( and [a-z_]+)?", field):
            problems.append(f"{path}.{field}: {rest}" if path else message)
            continue
        value = err.get("input")
        shown = ""
        if isinstance(value, str | int | float | bool) and repr(value) not in message:
            shown = _shown(path, value)
        problems.append(f"{path}: {message[:1].lower()}{message[1:]}{shown}")
    return problems


# Fields whose value may be a secret put in the wrong place: errors never echo them.
_SECRET_FIELDS = ("api_key_vault_ref", "auth_profile_id", "api_key_env", "client_id")


def _shown(path: str, value: str | int | float | bool) -> str:
    """` (got 'x')` for an error message: never a secret, a URL's password or a wall of text."""
    if not isinstance(value, str):
        return f" (got {value!r})"
    if path.rpartition(".")[2] in _SECRET_FIELDS:
        return ""
    text = redact_url(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f" (got {text!r})"


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after[_check(), ProviderConfig]",):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def _check_references(mp: ModelProviderConfig) -> list[str]:
    problems: list[str] = []
    provider_ids: dict[str, int] = {}
    for i, provider in enumerate(mp.providers):
        if provider.provider_id in provider_ids:
            problems.append(
                f"model_provider.providers[{i}].provider_id: duplicate id {provider.provider_id!r}"
            )
        provider_ids[provider.provider_id] = i
    # model_id -> indexes of its entries (its deployments), in file order.
    deployments: dict[str, list[int]] = {}
    for i, model in enumerate(mp.models):
        where = f"model_provider.models[{i}]"
        if model.provider_id not in provider_ids:
            problems.append(f"{where}.provider_id: no provider {model.provider_id!r} is configured")
        siblings = deployments.setdefault(model.model_id, [])
        problems.extend(_check_deployment(mp, i, siblings))
        siblings.append(i)
    models = {model_id: mp.models[indexes[0]] for model_id, indexes in deployments.items()}
    for i, model in enumerate(mp.models):
        if "fallbacks" in model._inherited:
            continue  # checked where it was written
        for j, fallback in enumerate(model.fallbacks):
            where = f"model_provider.models[{i}].fallbacks[{j}]"
            target = models.get(fallback)
            if target is None:
                problems.append(f"{where}: no model {fallback!r} is configured")
            elif fallback == model.model_id:
                problems.append(f"{where}: a model cannot fall back to itself")
            elif target.role != model.role:
                problems.append(f"{where}: {fallback!r} has role {target.role}, not {model.role}")
    for role in ProviderModelRole:
        key = f"default_{role.value}_model_id"
        wanted = getattr(mp, key)
        if not wanted:
            continue
        target = models.get(wanted)
        if target is None:
            problems.append(f"model_provider.{key}: no model {wanted!r} is configured")
        elif target.role != role:
            problems.append(f"model_provider.{key}: {wanted!r} has role {target.role}, not {role}")
    return problems


def _check_deployment(mp: ModelProviderConfig, i: int, siblings: list[int]) -> list[str]:
    """Entry i against the earlier entries of its model_id: one per provider, one role, and
    model-wide keys that agree."""
    model = mp.models[i]
    where = f"model_provider.models[{i}]"
    for k in siblings:
        if mp.models[k].provider_id == model.provider_id:
            return [
                f"{where}.model_id: {model.model_id!r} is already on provider "
                f"{model.provider_id!r} as models[{k}]; deployments of one model must be on "
                "different providers"
            ]
    if not siblings:
        return []
    problems: list[str] = []
    first = mp.models[siblings[0]]
    if first.role != model.role:
        problems.append(
            f"{where}.role: {model.role} here but {first.role} in models[{siblings[0]}], "
            f"another deployment of {model.model_id!r}; all deployments of a model have one role"
        )
    for key in _MODEL_WIDE:
        value = getattr(model, key)
        if not value:
            continue
        for k in siblings:
            other = getattr(mp.models[k], key)
            if other and other != value:
                problems.append(
                    f"{where}.{key}: {value!r} here but {other!r} in models[{k}], another "
                    f"deployment of {model.model_id!r}; it belongs to the model: set it on one "
                    "deployment or the same on each"
                )
                break
    return problems


# --- env overrides ----------------------------------------------------------------------

_SECTIONS: dict[str, type[BaseModel]] = {
    "daemon": DaemonConfig,
    "state": StateConfig,
    "model_provider": ModelProviderConfig,
    "auth.openai_oauth": OpenAIOAuthConfig,
    "cron": CronConfig,
    "agents": AgentsConfig,
    "usage": UsageConfig,
    "telemetry": TelemetryConfig,
}


def _env_names() -> dict[str, tuple[str, bool]]:
    """`PALYRA_DAEMON_PORT` -> ("daemon.port", is_list) for every scalar or list-of-str key."""
    names: dict[str, tuple[str, bool]] = {}
    for section, model in _SECTIONS.items():
        for key, info in model.model_fields.items():
            annotation = str(info.annotation)
            if "Config" in annotation:
                continue  # nested tables (providers, models) are not env-settable
            env_name = "PALYRA_" + f"{section}_{key}".replace(".", "_").upper()
            names[env_name] = (f"{section}.{key}", annotation.startswith("list"))
    return names


_ENV_NAMES = _env_names()
_ENV_BY_DOTTED = {dotted: name for name, (dotted, _) in _ENV_NAMES.items()}


def env_overrides(env: Mapping[str, str], problems: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, (dotted, is_list) in _ENV_NAMES.items():
        if name not in env:
            continue
        value: Any = env[name]
        if is_list:
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError:
                    problems.append(f"{dotted} (from env {name}): not a JSON list")
                    continue
            else:
                value = [v.strip() for v in text.split(",") if v.strip()]
        found[dotted] = value
    return found


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> bool:
    """Set `a.b.c` in nested tables; False (and nothing set) when a parent is not a table.

    A parent that the file made a non-table (`daemon = 5`) is left for validation to report.
    """
    *parents, leaf = dotted.split(".")
    node = raw
    for part in parents:
        if part not in node:
            node[part] = {}
        child = node[part]
        if not isinstance(child, dict):
            return False
        node = child
    node[leaf] = value
    return True


# --- paths ------------------------------------------------------------------------------


def resolve_state_dir(config: PalyraConfig, env: Mapping[str, str] | None = None) -> Path:
    """`[daemon] state_dir` > `PALYRA_STATE_DIR` > `$XDG_STATE_HOME/palyra`."""
    env = os.environ if env is None else env
    if config.daemon.state_dir:
        return Path(config.daemon.state_dir).expanduser()
    if env.get("PALYRA_STATE_DIR"):
        return Path(env["PALYRA_STATE_DIR"]).expanduser()
    base = env.get("XDG_STATE_HOME") or str(
        Path(env.get("HOME", "~")).expanduser() / ".local" / "state"
    )
    return Path(base) / "palyra"


# --- showing ----------------------------------------------------------------------------

REDACTED = "<redacted>"
_QUERY_SECRET = re.compile(
    r"(?i)(?P<head>(?:^|&)(?:password|passwd|pass|pwd|sslpassword|token|secret)=)[^&]*"
)


def redact_url(url: str) -> str:
    """Replace the password in `scheme://user:password@host/...` (and `?password=`)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=-1)
    netloc, tail = (rest, "") if end < 0 else (rest[:end], rest[end:])
    # The last '@' ends the userinfo, as URL parsers read it; a password may hold '@' or ':'.
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:{REDACTED}@{hostport}"
    elif at and scheme.lower().startswith("redis"):
        netloc = f"{REDACTED}@{hostport}"  # redis://password@host: the lone part is a password
    path, qmark, query = tail.partition("?")
    if qmark:
        body, hash_, fragment = query.partition("#")
        body = _QUERY_SECRET.sub(rf"\g<head>{REDACTED}", body)
        tail = f"{path}?{body}{hash_}{fragment}"
    return f"{scheme}://{netloc}{tail}"


def config_for_display(config: PalyraConfig, *, show_secrets: bool = False) -> dict[str, Any]:
    """The effective config as plain data, with passwords inside URLs replaced."""
    data = config.model_dump(mode="json")
    if not show_secrets:
        for section, key in (
            ("state", "url"),
            ("state", "redis_url"),
            ("daemon", "public_base_url"),
            ("telemetry", "otlp_endpoint"),
        ):
            if data[section][key]:
                data[section][key] = redact_url(data[section][key])
    return data
