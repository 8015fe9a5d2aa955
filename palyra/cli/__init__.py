"""`palyra`, the command line."""


def main() -> None:
    from palyra.cli.main import app

    app()
