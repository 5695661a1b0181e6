"""`persona-agents`: the operations of the original rake tasks, plus set-up helpers.

One module per kind of command; `main` is the group the console script and `python -m` run.
"""

from __future__ import annotations

import click

from .agents import create_missing_agents, list_agent_status, recreate_agent, test_connection
from .installation import installation
from .personas import db, demo_data, personas
from .plan_and_apply import apply_command, history_command, plan_command
from .sandbox_and_demo import demo, sandbox


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="persona-agents-pipeline", prog_name="persona-agents")
def main() -> None:
    """Give every persona exactly one ElevenLabs conversational agent, and keep it so."""


for command in (
    db, installation, personas, demo_data,
    create_missing_agents, list_agent_status, recreate_agent, test_connection,
    sandbox, demo,
    plan_command, apply_command, history_command,
):
    main.add_command(command)

__all__ = ["main"]
