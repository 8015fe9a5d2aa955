"""Configuration, by job: the schema of config.toml (`schema`), finding and loading it with
its env and flag overrides (`loading`), and showing it with secrets redacted (`display`).

Precedence of values: built-in defaults < file < `PALYRA_<SECTION>_<KEY>` env < flags.
Every error names the dotted key and the rule it broke.
"""

from palyra.config.display import REDACTED, config_for_display, redact_url
from palyra.config.loading import (
    ConfigError,
    LoadedConfig,
    env_overrides,
    find_config_path,
    load_config,
    parse_toml,
    read_text,
    read_toml,
    resolve_state_dir,
    salvage_config,
    validate_config,
)
from palyra.config.schema import (
    DEFAULT_PORT,
    DETERMINISTIC_PROVIDER_ID,
    AgentsConfig,
    AuthConfig,
    CronConfig,
    DaemonConfig,
    ModelConfig,
    ModelProviderConfig,
    OpenAIOAuthConfig,
    PalyraConfig,
    ProviderConfig,
    ProviderSettings,
    StateConfig,
    TelemetryConfig,
    UsageConfig,
    check_base_url,
)

__all__ = [
    "DEFAULT_PORT",
    "DETERMINISTIC_PROVIDER_ID",
    "REDACTED",
    "AgentsConfig",
    "AuthConfig",
    "ConfigError",
    "CronConfig",
    "DaemonConfig",
    "LoadedConfig",
    "ModelConfig",
    "ModelProviderConfig",
    "OpenAIOAuthConfig",
    "PalyraConfig",
    "ProviderConfig",
    "ProviderSettings",
    "StateConfig",
    "TelemetryConfig",
    "UsageConfig",
    "check_base_url",
    "config_for_display",
    "env_overrides",
    "find_config_path",
    "load_config",
    "parse_toml",
    "read_text",
    "read_toml",
    "redact_url",
    "resolve_state_dir",
    "salvage_config",
    "validate_config",
]
