"""Running the CLI in-process for the tests."""

from click.testing import CliRunner

from persona_agents_pipeline.cli import main


def run(*args, input=None):
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)
