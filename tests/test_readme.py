"""Every `persona-agents` command the README shows runs as written, in order, against the sandbox.

Placeholders are filled in (`ID` with a real persona, `personas.csv` with a file); a bracketed option must
exist on its command (`--yes` is given, as a script would); a server command (`sandbox`) is only asked for its help, since the demo and
tests/test_sandbox.py run it.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from cli_helpers import run

from persona_agents_pipeline.cli import main

README = Path(__file__).resolve().parent.parent / "README.md"
LONG_RUNNING = {"sandbox"}


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line.removeprefix(".venv/bin/") for line in lines if re.match(r"(\.venv/bin/)?persona-agents ", line)]


def command_for(words: list[str]) -> tuple[click.Command, list[str]]:
    """The click command a README line names, and the words after its name."""
    command: click.Command = main
    while isinstance(command, click.Group) and words and words[0] in command.commands:
        command, words = command.commands[words[0]], words[1:]
    return command, words


def options_of(command: click.Command) -> set[str]:
    return {name for param in command.params for name in [*param.opts, *param.secondary_opts]}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the CLI tests cover PostgreSQL
def test_every_readme_command_runs_as_written(cli_env, store, sandbox, tmp_path):
    csv = tmp_path / "personas.csv"
    csv.write_text("name,temper_level,chattiness,emotional_attachment\nImported,0.7,0.8,0.2\n")
    lines = readme_commands()
    assert lines, "the README shows no persona-agents command"
    for line in lines:
        bracketed = re.findall(r"\[([^\]]*)\]", line)
        words = shlex.split(re.sub(r"\[[^\]]*\]", "", line))[1:]
        command, rest = command_for(words)
        for option in re.findall(r"--[a-z-]+", " ".join(bracketed)):
            assert option in options_of(command), f"README: `{line}` shows {option}, which {command.name} lacks"
        if command.name in LONG_RUNNING:
            result = run(*words[: len(words) - len(rest)], "--help")
        else:
            persona_id = str(max((p.id for p in store.iter_personas()), default=1))
            args = [persona_id if w == "ID" else str(csv) if w == "personas.csv" else w for w in words]
            if "--yes" in bracketed:  # without a terminal, commands that ask first need it
                args.append("--yes")
            result = run(*args)
        assert result.exit_code == 0, f"README: `{line}` exited {result.exit_code}:\n{result.output}"
