"""The repository documents itself: these tests fail when the docs and the code disagree.

- docs/configuration.md holds the key tables `python -m palyra.config_docs` generates from
  the config schema, as they are now.
- docs/api.md's route index lists exactly the routes the daemon registers.
- docs/cli.md has a section for every `palyra` command naming each of its options, and no
  section for a command that does not exist.
- Links in README.md and docs/*.md point at files of the repository that exist, and every
  `palyra ...` command they show exists with the options it is given.
- The examples of README.md and of the pages in RUN_PAGES run as written against a real
  daemon: every `sh` and `python` block, in order, in one shell per page, but those marked
  `<!-- not run: REASON -->` right above their fence. A runnable block on another page
  fails the markers test.
"""

from __future__ import annotations

import enum
import json
import os
import re
import shlex
import signal
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer

from palyra import config_docs
from palyra.cli.main import app as cli_app
from palyra.config import validate_config
from palyra.daemon import build_app
from palyra.daemon import cli as daemon_cli
from tests.support.daemon import free_port, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
# The page of this checkout (config_docs.PAGE is where the installed package sits).
CONFIG_PAGE = DOCS / "configuration.md"


def test_configuration_page_is_what_the_schema_generates() -> None:
    page = CONFIG_PAGE.read_text(encoding="utf-8")
    try:
        fresh = config_docs.render(page)
    except config_docs.DocsError as exc:
        pytest.fail(str(exc))
    assert fresh == page, (
        "docs/configuration.md is stale: run `.venv/bin/python -m palyra.config_docs` "
        "and commit the page"
    )


def test_every_config_key_has_a_row_with_its_default() -> None:
    # Independent of the generator: each key's last part is in the page with its default.
    page = CONFIG_PAGE.read_text(encoding="utf-8")
    for _, dotted, info in config_docs.all_keys():
        key = dotted.rpartition(".")[2]
        row = next((line for line in page.splitlines() if line.startswith(f"| `{key}` |")), None)
        assert row is not None, f"{dotted}: no row in docs/configuration.md"
        if dotted not in config_docs.DEFAULT_NOTES and not info.is_required():
            default = info.get_default(call_default_factory=True)
            if isinstance(default, enum.Enum):
                default = default.value
            if default is None:
                continue
            shown = str(default).lower() if isinstance(default, bool) else str(default)
            if isinstance(default, list | tuple):
                shown = "[" + ", ".join(f'"{v}"' for v in default) + "]"
            assert any(shown in line for line in page.splitlines() if f"| `{key}` |" in line), (
                f"{dotted}: its default {shown} is not on its row"
            )


def test_the_generator_refuses_a_key_without_a_meaning(monkeypatch: pytest.MonkeyPatch) -> None:
    meanings = dict(config_docs.MEANINGS)
    del meanings["daemon.port"]
    monkeypatch.setattr(config_docs, "MEANINGS", meanings)
    with pytest.raises(config_docs.DocsError, match=r"daemon\.port: no meaning written"):
        config_docs.generate()


# --- routes -----------------------------------------------------------------------------

_ROUTE_ROW = re.compile(r"^\| `(GET|POST|PUT|PATCH|DELETE) (/[^` ]*)` \|")


def _registered_routes(tmp_path: Path) -> set[str]:
    config = validate_config({"version": 1, "daemon": {"state_dir": str(tmp_path / "state")}})
    app = build_app(config, env={"HOME": str(tmp_path), "PALYRA_ADMIN_TOKEN": "t" * 32})
    routes: set[str] = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue  # aiohttp adds HEAD to every GET; the page says so once
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or info.get("prefix")
        routes.add(f"{route.method} {path}")
    return routes


def _documented_routes() -> list[str]:
    page = (DOCS / "api.md").read_text(encoding="utf-8")
    section = page.split("## Every route", 1)[1].split("\n## ", 1)[0]
    rows = [_ROUTE_ROW.match(line) for line in section.splitlines()]
    return [f"{m.group(1)} {m.group(2)}" for m in rows if m]


def test_api_page_lists_every_route_the_daemon_registers(tmp_path: Path) -> None:
    registered = _registered_routes(tmp_path)
    documented = _documented_routes()
    assert len(documented) == len(set(documented)), "a route is listed twice in docs/api.md"
    missing = sorted(registered - set(documented))
    stale = sorted(set(documented) - registered)
    assert not missing, f"routes not in docs/api.md's 'Every route' table: {missing}"
    assert not stale, f"docs/api.md lists routes the daemon does not have: {stale}"


def test_api_page_names_every_palyra_header() -> None:
    page = (DOCS / "api.md").read_text(encoding="utf-8")
    headers = set(re.findall(r"x-palyra-[a-z-]+", page))
    source = "\n".join(p.read_text() for p in (ROOT / "palyra").rglob("*.py"))
    used = {h.lower() for h in re.findall(r"(?i)x-palyra-[a-z-]+[a-z]", source)}
    assert used, "no x-palyra-* header found in the package: the pattern is wrong"
    assert used <= headers, f"headers not in docs/api.md: {sorted(used - headers)}"


def test_api_page_names_every_error_code() -> None:
    page = (DOCS / "api.md").read_text(encoding="utf-8")
    source = "\n".join(p.read_text() for p in (ROOT / "palyra").rglob("*.py"))
    codes = set(re.findall(r'\bcode ?= ?"([a-z_]+)"', source))
    assert len(codes) > 20, "error codes not found in the package: the pattern is wrong"
    missing = sorted(c for c in codes if f"`{c}`" not in page)
    assert not missing, f"error codes not in docs/api.md: {missing}"


def test_every_environment_variable_the_docs_name_is_read() -> None:
    """A `PALYRA_...` variable in the docs is a config key's (`PALYRA_DAEMON_PORT`) or one
    the code or the test suite reads (`PALYRA_URL`, `PALYRA_FUZZ_SEED`): no typos, no stale
    names. `PALYRA_USAGE_*` stands for a section's variables."""
    sources = [*(ROOT / "palyra").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]
    source = "\n".join(p.read_text() for p in sources if p.name != "test_docs.py")
    # `PALYRA_<SECTION>_<KEY>` for every key of a section (tables of tables are file-only).
    config_names = {
        "PALYRA_" + dotted.replace(".", "_").upper()
        for _, dotted, _ in config_docs.all_keys()
        if "." in dotted and "[]" not in dotted
    }
    sections = {name.rsplit("_", 1)[0] for name in config_names}
    problems = []
    for page in [README, *sorted(DOCS.glob("*.md"))]:
        for name in sorted(set(re.findall(r"PALYRA_[A-Z0-9_]*[A-Z0-9]_?\*?", page.read_text()))):
            if name.endswith(("_*", "_")):
                if not any(s.startswith(name.rstrip("*").rstrip("_")) for s in sections):
                    problems.append(f"{page.name}: {name}")
            elif name not in config_names and name not in source:
                problems.append(f"{page.name}: {name}")
    assert not problems, f"environment variables nothing reads: {problems}"


# --- CLI --------------------------------------------------------------------------------

_HEADING = re.compile(r"^#{2,4} `(palyra(?: [a-z-]+)*)`$")


def _commands() -> dict[str, Any]:
    """'palyra cron add' -> its click command, for every command and group."""
    found: dict[str, Any] = {}

    def walk(command: Any, path: str) -> None:
        found[path] = command
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(typer.main.get_command(cli_app), "palyra")
    return found


def _sections() -> dict[str, str]:
    """Heading `palyra ...` -> the text up to the next heading."""
    sections: dict[str, str] = {}
    current: str | None = None
    for line in (DOCS / "cli.md").read_text(encoding="utf-8").splitlines():
        match = _HEADING.match(line)
        if match:
            current = match.group(1)
            assert current not in sections, f"docs/cli.md: two sections for {current}"
            sections[current] = ""
        elif line.startswith("#"):
            current = None
        elif current is not None:
            sections[current] += line + "\n"
    return sections


def _names(command: Any) -> list[str]:
    names: list[str] = []
    for param in command.params:
        if param.param_type_name == "option":
            names += [o for o in param.opts if o.startswith("--")]
        else:
            names.append(param.name.upper())
    return names


def test_cli_page_has_a_section_for_every_command_naming_its_options() -> None:
    commands = _commands()
    sections = _sections()
    undocumented = sorted(set(commands) - set(sections))
    stale = sorted(set(sections) - set(commands))
    assert not undocumented, f"docs/cli.md has no section for: {undocumented}"
    assert not stale, f"docs/cli.md documents commands that do not exist: {stale}"
    problems = [
        f"{path}: {name}"
        for path, command in commands.items()
        for name in _names(command)
        if not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", sections[path])
    ]
    assert not problems, f"options or arguments not named in their docs/cli.md section: {problems}"


_SPAN = re.compile(r"`([^`\n]+)`")


def _command_lines(page: Path) -> list[tuple[int, str]]:
    """(line number, text) of every `palyra ...` command in the page's code blocks and code
    spans, continuation lines joined and comments, pipes and `;` split off."""
    found: list[tuple[int, str]] = []
    in_code = False
    pending = ""
    for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```"):
            in_code = not in_code
            continue
        texts = [line] if in_code else _SPAN.findall(line)
        for text in texts:
            if in_code:
                text = pending + text
                if text.endswith("\\"):
                    pending = text[:-1]
                    continue
                pending = ""
                text = re.split(r"(?:^|\s)#", text, maxsplit=1)[0]
            for part in re.split(r"\||;|&&|\$\(|\)", text):
                part = part.strip()
                if part.startswith("palyra "):
                    found.append((n, part))
    return found


def _problem(words: list[str], root: Any) -> str | None:
    """Why `palyra WORDS` names no command, or an option its command does not have."""
    command, path, i = root, "palyra", 0
    while i < len(words):
        word = words[i]
        i += 1
        if word.startswith("-"):
            name = word.split("=", 1)[0]
            param = next((p for p in command.params if name in (*p.opts, *p.secondary_opts)), None)
            if param is None:
                if name in ("--help", "-h") or not re.fullmatch(r"--?[a-z][a-z-]*", name):
                    continue
                return f"{path} has no option {name}"
            if not param.is_flag and "=" not in word:
                i += 1  # its value
            continue
        subcommands = getattr(command, "commands", None)
        if subcommands is None:
            continue  # an argument of a command
        if not re.fullmatch(r"[a-z][a-z-]*", word):
            return None  # a placeholder: `palyra auth ...`, `palyra COMMAND`
        if word not in subcommands:
            return f"{path} has no command {word!r}"
        command, path = subcommands[word], f"{path} {word}"
    return None


@pytest.mark.parametrize(
    "page", [ROOT / "README.md", *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name
)
def test_every_palyra_command_the_docs_show_exists(page: Path) -> None:
    root = typer.main.get_command(cli_app)
    problems = []
    for n, text in _command_lines(page):
        try:
            words = shlex.split(text)
        except ValueError:
            words = text.split()
        problem = _problem(words[1:], root)
        if problem:
            problems.append(f"{page.name}:{n}: `{text}`: {problem}")
    assert not problems, "\n".join(problems)


def test_cli_page_names_every_option_of_palyrad() -> None:
    section = (DOCS / "cli.md").read_text(encoding="utf-8").split("## palyrad\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    command = typer.main.get_command(daemon_cli)
    missing = [
        option
        for param in command.params
        for option in param.opts
        if option.startswith("--")
        and option != "--help"
        and f"`{option}" not in section
        and f" {option} " not in section
        and f"[{option} " not in section
    ]
    assert not missing, f"palyrad options not in docs/cli.md's palyrad section: {missing}"


# --- links ------------------------------------------------------------------------------

_LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize(
    "page", [ROOT / "README.md", *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name
)
def test_links_stay_inside_the_repository_and_resolve(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    problems: list[str] = []
    for target in _LINK.findall(text):
        if target.startswith(("http://", "https://")):
            if page.name == "README.md" and "127.0.0.1" not in target:
                problems.append(f"{target}: the README links only inside the repository")
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.is_relative_to(ROOT):
            problems.append(f"{target}: outside the repository")
        elif not resolved.exists():
            problems.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            problems.append(f"{target}: no heading #{anchor} in {resolved.name}")
    assert not problems, f"{page.name}: {problems}"


@pytest.mark.parametrize(
    "page", [ROOT / "README.md", *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name
)
def test_paths_of_the_repository_the_docs_name_exist(page: Path) -> None:
    """`palyra/routing.py`, `tests/fakes/`, `scripts/daemon` in a code span: still there."""
    named = re.findall(r"`((?:palyra|tests|docs|scripts|benchmarks)/[\w./-]*)`", page.read_text())
    missing = sorted({path for path in named if not (ROOT / path).exists()})
    assert not missing, f"{page.name} names paths that do not exist: {missing}"


def _anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation but - and _ dropped, spaces to -."""
    anchors: set[str] = set()
    counts: dict[str, int] = {}
    in_code = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        title = line.lstrip("#").strip().lower()
        slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
        n = counts.get(slug, 0)
        counts[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


# --- examples -----------------------------------------------------------------------

# Pages whose sh and python examples are run; the README first (it makes the agent and the
# cron job the others may name).
RUN_PAGES = (
    README,
    DOCS / "api.md",
    DOCS / "cli.md",
    DOCS / "deterministic.md",
    DOCS / "usage.md",
)
_FENCE = re.compile(r"^```(\w*)\s*$")
_NOT_RUN = re.compile(r"^<!-- not run: (.+) -->$")
# The examples name the default port; the test's daemon has a free one.
DEFAULT_PORT = "7142"


@dataclass(frozen=True)
class Block:
    lang: str
    line: int  # of the opening fence, 1-based
    text: str
    skip_reason: str | None


def page_blocks(page: Path) -> list[Block]:
    """Every fenced block of the page; one whose fence follows `<!-- not run: why -->`
    directly is one the tests do not run."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        marker = _NOT_RUN.match(lines[i - 1]) if i > 0 else None
        text = "\n".join(lines[i + 1 : end]) + "\n"
        blocks.append(Block(fence.group(1), i + 1, text, marker.group(1) if marker else None))
        i = end + 1
    return blocks


@pytest.mark.parametrize(
    "page", [ROOT / "README.md", *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name
)
def test_not_run_markers_sit_on_blocks_and_toml_examples_are_valid(page: Path) -> None:
    lines = page.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines):
        if line.startswith("<!-- not run"):
            assert _NOT_RUN.match(line), f"{page.name}:{n + 1}: write <!-- not run: REASON -->"
            assert n + 1 < len(lines) and lines[n + 1].startswith("```"), (
                f"{page.name}:{n + 1}: a not-run marker must sit right above a fenced block"
            )
    for block in page_blocks(page):
        runnable = block.lang in ("sh", "python") and block.skip_reason is None
        assert page in RUN_PAGES or not runnable, (
            f"{page.name}:{block.line}: a runnable example on a page whose examples are not "
            "run: add the page to RUN_PAGES in tests/test_docs.py, or mark the block not run"
        )
        if block.lang == "toml" and block.text.startswith("version = 1"):
            # A whole config.toml: it must be one the daemon takes.
            validate_config(tomllib.loads(block.text), f"{page.name}:{block.line}")


def _script(page: Path, port: int) -> str:
    """One bash script of the page's runnable blocks in order, as a reader types them into
    one shell: what one block exports, the next sees."""
    parts = ["set -euo pipefail"]
    for block in page_blocks(page):
        if block.skip_reason is not None or block.lang not in ("sh", "python"):
            continue
        text = block.text.replace(DEFAULT_PORT, str(port))
        parts.append(f'echo "@@ {page.name}:{block.line} $(date +%s.%N)" >&2')
        if block.lang == "sh":
            parts.append(text)
        else:
            parts.append(f".venv/bin/python - <<'EXAMPLE_PY'\n{text}EXAMPLE_PY")
    return "\n".join(parts) + "\n"


@dataclass
class Reader:
    """A newcomer's machine: a fresh home, a directory that looks like the repository's root
    (its .venv and scripts/), and `palyrad` running as the README's step 1 says."""

    env: dict[str, str]
    clone: Path
    port: int

    def run(self, page: Path) -> subprocess.CompletedProcess[str]:
        env = dict(self.env)
        if page != README:
            # The pages of docs/ take `palyra` to be on PATH, as the README's step 2 puts it.
            env["PATH"] = f"{self.clone / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        result = subprocess.run(
            ["bash", "-c", _script(page, self.port)],
            cwd=self.clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        markers = [m.split()[1] for m in result.stderr.splitlines() if m.startswith("@@ ")]
        where = (markers or ["?"])[-1]
        assert result.returncode == 0, (
            f"the example at {where} failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
        return result


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reader]:
    """The daemon's port is a free one, not 7142: `PALYRA_DAEMON_PORT`, which `palyra` reads
    too, and 7142 in the examples is replaced. At the end it is stopped as step 1 says."""
    tmp = tmp_path_factory.mktemp("reader")
    home = tmp / "home"
    clone = tmp / "clone"
    home.mkdir()
    clone.mkdir()
    for name in (".venv", "scripts"):
        (clone / name).symlink_to(ROOT / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PALYRA_", "XDG_"))}
    env.pop("VIRTUAL_ENV", None)
    port = free_port()
    env |= {
        "HOME": str(home),
        "NO_COLOR": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PALYRA_DAEMON_PORT": str(port),
    }
    log = tmp / "palyrad.log"
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "palyrad")],
            cwd=clone,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_healthy(daemon, port, log)
        yield Reader(env, clone, port)
    finally:
        # Step 1: SIGTERM stops it, requests in flight finished, exit 0.
        daemon.send_signal(signal.SIGTERM)
        try:
            code = daemon.wait(timeout=15)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
            raise
    assert code == 0, log.read_text()
    # Step 1: the logs are JSON lines when stderr is not a terminal.
    for line in log.read_text().splitlines():
        record = json.loads(line)
        assert {"event", "level", "timestamp"} <= record.keys(), line


def test_readme_examples_run_as_written(reader: Reader) -> None:
    result = reader.run(README)
    # What the README says the tool example prints.
    assert "[tool result] calculator: 391" in result.stdout, result.stdout
    # Step 8: the agent added by editing agents.toml runs after `palyra config reload`.
    assert "[tool result] current_time: " in result.stdout, result.stdout


@pytest.mark.parametrize("page", RUN_PAGES[1:], ids=lambda p: p.name)
def test_docs_examples_run_as_written(reader: Reader, page: Path) -> None:
    reader.run(page)
