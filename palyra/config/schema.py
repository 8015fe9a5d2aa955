"""The config.toml schema: its sections and keys, their types, defaults and rules, as
pydantic models (loading and overriding them is palyra.config.loading's job; showing them,
palyra.config.display's). docs/configuration.md is generated from these models.
"""

from __future__ import annotations

import copy
import os
import re
import typing
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
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
