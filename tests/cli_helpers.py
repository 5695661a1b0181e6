"""Running the CLI in-process for the tests."""

from click.testing import CliRunner
from sqlalchemy import text

from persona_agents_pipeline.cli import main


def run(*args, input=None):
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def snapshot(store):
    """Every row of `personas`, to show a command changed nothing."""
    with store.engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text("SELECT * FROM personas ORDER BY id"))]
