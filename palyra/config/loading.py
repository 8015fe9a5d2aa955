"""Finding, reading and checking config.toml: where the file is found, how
`PALYRA_<SECTION>_<KEY>` env and flags override it, and every problem named by its dotted key
and the rule it broke, all in one pass.

Precedence of values: built-in defaults < file < `PALYRA_<SECTION>_<KEY>` env < flags.
"""

from __future__ import annotations

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
    """One or more problems, each `dotted.key: rule`. As a string, all of them on one line
    (`source: a: rule; b: rule`), as palyrad's start error and log have them; `lines()` is
    one problem a line, as the CLI shows them."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        super().__init__(self._prefix() + "; ".join(problems))

    def _prefix(self) -> str:
        return f"{self.source}: " if self.source else ""

    def lines(self) -> list[str]:
        """Each problem on its own, `source: dotted.key: rule`."""
        return [self._prefix() + problem for problem in self.problems]


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


_ABSENT = object()  # a key not set
_UNKNOWN = object()  # a key under something that is not a table (`daemon = 5`)


def salvage_config(
    path: str | os.PathLike[str] | None,
    keys: tuple[str, ...],
    *,
    env: Mapping[str, str] | None = None,
) -> tuple[PalyraConfig, set[str]]:
    """For when load_config failed: the built-in defaults with those of `keys` (dotted,
    `daemon.port`) whose value in the file or env is sound on its own, and the keys whose
    value is not known (wrong, or in a file that cannot be read or parsed; left at their
    default here). Lets a command that needs a key or two go on while the user fixes the
    rest."""
    env = os.environ if env is None else env
    raw: dict[str, Any] | None = {}
    try:
        found = find_config_path(path, env)
        if found is not None:
            raw = read_toml(found)
    except ConfigError:
        raw = None  # what the file says is unknown: none of its keys can be taken
    from_env = env_overrides(env, [])
    kept: dict[str, Any] = {"version": 1}
    unknown: set[str] = set()
    for dotted in keys:
        value = from_env.get(dotted, _ABSENT)
        if value is _ABSENT and raw is None:
            unknown.add(dotted)
            continue
        if value is _ABSENT:
            value = _get_dotted(raw or {}, dotted)
        if value is _ABSENT:
            continue  # not set: its default is what the daemon would use
        if value is _UNKNOWN:
            unknown.add(dotted)
            continue
        alone: dict[str, Any] = {"version": 1}
        try:
            _set_dotted(alone, dotted, value)
            validate_config(alone)
        except ConfigError:
            unknown.add(dotted)
            continue
        _set_dotted(kept, dotted, value)
    try:
        return validate_config(kept), unknown
    except ConfigError:  # sound alone, not together
        return validate_config({"version": 1}), set(keys)


def _get_dotted(raw: Mapping[str, Any], dotted: str) -> Any:
    """The value at `a.b.c` in nested tables; _ABSENT when not set, _UNKNOWN when a parent
    is not a table."""
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, Mapping):
            return _UNKNOWN
        if part not in node:
            return _ABSENT
        node = node[part]
    return node


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
        # What the entries refer to is checked on the file's own values, so that a wrong key
        # anywhere (in the section too) does not hide a dangling reference until the next run.
        section = raw.get("model_provider", {})
        if isinstance(section, Mapping):
            problems += _check_references(_references_of_raw(section))
        raise ConfigError(problems, source) from None
    problems += _check_references(_references_of(config.model_provider))
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


@dataclass(frozen=True, slots=True)
class _Entry:
    """What the reference checks read of one `[[model_provider.models]]` entry."""

    model_id: str
    provider_id: str | None  # None: its own key is wrong (and reported as such)
    role: ProviderModelRole | None  # None: likewise
    fallbacks: list[str | None]  # None: an item that is not a name
    wide: dict[str, Any]  # the model-wide keys (_MODEL_WIDE), as written or inherited
    inherited: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class _References:
    """What `[model_provider]` names and refers to. None: an entry lacking the field."""

    provider_ids: list[str | None]
    models: list[_Entry | None]
    defaults: dict[ProviderModelRole, Any]


def _references_of(mp: ModelProviderConfig) -> _References:
    return _References(
        [p.provider_id for p in mp.providers],
        [
            _Entry(
                m.model_id,
                m.provider_id,
                m.role,
                list(m.fallbacks),
                {key: getattr(m, key) for key in _MODEL_WIDE},
                frozenset(m._inherited),
            )
            for m in mp.models
        ],
        {role: getattr(mp, f"default_{role.value}_model_id") for role in ProviderModelRole},
    )


def _references_of_raw(section: Mapping[str, Any]) -> _References:
    """The references of a section that did not validate, from what it holds of each field
    they need: an entry with a wrong key elsewhere is still checked, and a field that is
    itself wrong (reported by the schema) is left out rather than guessed."""
    providers = section.get("providers", [])
    models = section.get("models", [])
    providers = providers if isinstance(providers, list) else []
    models = models if isinstance(models, list) else []
    if not providers and not models:
        # As the schema does: no providers at all means the built-in ones.
        builtin = _references_of(ModelProviderConfig())
        return _References(builtin.provider_ids, builtin.models, _raw_defaults(section))
    provider_ids = [
        entry.get("provider_id") if isinstance(entry, Mapping) else None for entry in providers
    ]
    return _References(
        [i if isinstance(i, str) else None for i in provider_ids],
        [_raw_entry(entry) for entry in models],
        _raw_defaults(section),
    )


def _raw_entry(entry: Any) -> _Entry | None:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("model_id"), str):
        return None
    provider_id = entry.get("provider_id")
    try:
        role: ProviderModelRole | None = ProviderModelRole(entry.get("role", "chat"))
    except ValueError:
        role = None
    fallbacks = entry.get("fallbacks", [])
    return _Entry(
        entry["model_id"],
        provider_id if isinstance(provider_id, str) else None,
        role,
        [f if isinstance(f, str) else None for f in fallbacks]
        if isinstance(fallbacks, list)
        else [],
        {key: entry.get(key) for key in _MODEL_WIDE},
    )


def _raw_defaults(section: Mapping[str, Any]) -> dict[ProviderModelRole, Any]:
    return {role: section.get(f"default_{role.value}_model_id", "") for role in ProviderModelRole}


def _check_references(refs: _References) -> list[str]:
    problems: list[str] = []
    provider_ids: dict[str, int] = {}
    for i, provider_id in enumerate(refs.provider_ids):
        if provider_id is None:
            continue
        if provider_id in provider_ids:
            problems.append(
                f"model_provider.providers[{i}].provider_id: duplicate id {provider_id!r}"
            )
        provider_ids[provider_id] = i
    # model_id -> its entries (its deployments) and their indexes, in file order.
    deployments: dict[str, list[tuple[int, _Entry]]] = {}
    for i, model in enumerate(refs.models):
        if model is None:
            continue
        where = f"model_provider.models[{i}]"
        if model.provider_id is not None and model.provider_id not in provider_ids:
            problems.append(f"{where}.provider_id: no provider {model.provider_id!r} is configured")
        siblings = deployments.setdefault(model.model_id, [])
        problems.extend(_check_deployment(model, i, siblings))
        siblings.append((i, model))
    models = {model_id: entries[0][1] for model_id, entries in deployments.items()}
    for i, model in enumerate(refs.models):
        if model is None or "fallbacks" in model.inherited:
            continue  # checked where it was written
        for j, fallback in enumerate(model.fallbacks):
            if fallback is None:
                continue
            where = f"model_provider.models[{i}].fallbacks[{j}]"
            target = models.get(fallback)
            if target is None:
                problems.append(f"{where}: no model {fallback!r} is configured")
            elif fallback == model.model_id:
                problems.append(f"{where}: a model cannot fall back to itself")
            elif None not in (target.role, model.role) and target.role != model.role:
                problems.append(f"{where}: {fallback!r} has role {target.role}, not {model.role}")
    for role, wanted in refs.defaults.items():
        if not wanted or not isinstance(wanted, str):
            continue
        key = f"default_{role.value}_model_id"
        target = models.get(wanted)
        if target is None:
            problems.append(f"model_provider.{key}: no model {wanted!r} is configured")
        elif target.role is not None and target.role != role:
            problems.append(f"model_provider.{key}: {wanted!r} has role {target.role}, not {role}")
    return problems


def _check_deployment(model: _Entry, i: int, siblings: list[tuple[int, _Entry]]) -> list[str]:
    """Entry i against the earlier entries of its model_id: one per provider, one role, and
    model-wide keys that agree."""
    where = f"model_provider.models[{i}]"
    for k, other in siblings:
        if model.provider_id is not None and other.provider_id == model.provider_id:
            return [
                f"{where}.model_id: {model.model_id!r} is already on provider "
                f"{model.provider_id!r} as models[{k}]; deployments of one model must be on "
                "different providers"
            ]
    if not siblings:
        return []
    problems: list[str] = []
    k, first = siblings[0]
    if None not in (first.role, model.role) and first.role != model.role:
        problems.append(
            f"{where}.role: {model.role} here but {first.role} in models[{k}], "
            f"another deployment of {model.model_id!r}; all deployments of a model have one role"
        )
    for key in _MODEL_WIDE:
        value = model.wide[key]
        if not value:
            continue
        for k, other in siblings:
            if other.wide[key] and other.wide[key] != value:
                problems.append(
                    f"{where}.{key}: {value!r} here but {other.wide[key]!r} in models[{k}], "
                    f"another deployment of {model.model_id!r}; it belongs to the model: set it "
                    "on one deployment or the same on each"
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
