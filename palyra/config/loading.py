"""Finding, reading and checking config.toml: where the file is found, how
`PALYRA_<SECTION>_<KEY>` env and flags override it, and every problem named by its dotted key
and the rule it broke, all in one pass.

Precedence of values: built-in defaults < file < `PALYRA_<SECTION>_<KEY>` env < flags.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ValidationError,
)

from palyra.config.display import redact_url
from palyra.config.schema import (
    _MODEL_WIDE,
    AgentsConfig,
    CronConfig,
    DaemonConfig,
    ModelProviderConfig,
    OpenAIOAuthConfig,
    PalyraConfig,
    StateConfig,
    TelemetryConfig,
    UsageConfig,
)
from palyra.types import ProviderModelRole


class ConfigError(Exception):
    """One or more problems, each `dotted.key: rule`."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        prefix = f"{source}: " if source else ""
        super().__init__(prefix + "; ".join(problems))


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
