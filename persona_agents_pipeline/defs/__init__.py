"""Dagster definitions, split by kind; `persona_agents_pipeline.definitions` puts them together."""
