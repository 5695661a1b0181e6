"""`python -m persona_agents_pipeline.cli` (the tests and the local cluster run the CLI so)."""

from . import main

main()
