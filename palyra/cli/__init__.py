"""`palyra`, the command line."""

from __future__ import annotations

import sys

import typer
from typer import exceptions as typer_exc

# Typer 0.29 vendors click privately; its UsageError is the one raised here (pinned version).
from typer._click import exceptions as click_exc
from typer._click.core import Context
from typer.core import TyperOption

_display_type_rich = TyperOption.display_type_rich


def _flag_without_type(self: TyperOption, ctx: Context) -> str | None:
    # Typer 0.29 shows `<bool>` beside every flag in --help, as if `--json` took a value.
    return None if self.is_flag else _display_type_rich(self, ctx)


TyperOption.display_type_rich = _flag_without_type  # type: ignore[method-assign]


def run_typer(app: typer.Typer, prog: str) -> None:
    """Run a Typer app with one-line usage errors (exit 2) instead of a rich box."""
    command = typer.main.get_command(app)
    try:
        result = command.main(prog_name=prog, standalone_mode=False)
    except click_exc.NoArgsIsHelpError as exc:
        # `palyra` alone shows help: a usage error by our exit-code rules.
        print(exc.ctx.get_help() if exc.ctx else str(exc), file=sys.stderr)
        sys.exit(2)
    except click_exc.UsageError as exc:
        where = f" (see {exc.ctx.command_path} --help)" if exc.ctx else ""
        message = " ".join(exc.format_message().split())
        print(f"{prog}: usage error: {message}{where}", file=sys.stderr)
        sys.exit(2)
    except click_exc.ClickException as exc:
        print(f"{prog}: error: {' '.join(exc.format_message().split())}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer_exc.Exit as exc:
        sys.exit(exc.exit_code)
    except typer_exc.Abort:
        print(f"{prog}: aborted", file=sys.stderr)
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)


def main() -> None:
    from palyra.cli.main import app

    run_typer(app, "palyra")
