"""`deploy/local-cluster start` checks its configuration first: what is missing is named at once, before
anything starts (not as a stack trace on the first click in the UI), and no password is printed."""

import os
import subprocess
import uuid

from cluster_helpers import SCRIPT, free_port


def start(tmp_path, **settings: str) -> subprocess.CompletedProcess:
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("ELEVENLABS_", "PERSONA", "DAGSTER_", "LOCAL_CLUSTER_"))}
    # Names of this test's own, so that even a check that wrongly passed would start nothing shared.
    env.update(LOCAL_CLUSTER_STATE=str(tmp_path / "cluster"), LOCAL_CLUSTER_PORT=str(free_port()),
               DAGSTER_CELERY_QUEUE=f"dagster_test_{uuid.uuid4().hex[:10]}", PERSONA_AGENTS_DATA_DIR=str(tmp_path / "data"),
               PERSONA_AGENTS_CREDENTIALS_FILE=str(tmp_path / "no-credentials"), **settings)
    try:
        return subprocess.run([str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=120)
    finally:
        if (tmp_path / "cluster").exists():  # started when it should not have: stop what it started
            subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)


def test_start_without_an_api_key_says_so_and_starts_nothing(tmp_path, sqlite_store):
    result = start(tmp_path, PERSONAS_DATABASE_URL=sqlite_store.database_url)
    assert result.returncode != 0
    assert "ELEVENLABS_API_KEY is not set" in result.stderr
    assert not (tmp_path / "cluster").exists(), "nothing may start before the configuration is complete"


def test_start_names_every_problem_at_once_without_printing_a_password(tmp_path):
    port = free_port()  # nothing listens there
    result = start(tmp_path, ELEVENLABS_API_KEY="sandbox-test-key", PERSONA_AGENTS_RUN_BATCH_SIZE="many",
                   DAGSTER_PG_URL=f"postgresql+psycopg2://dagster:s3cret@127.0.0.1:{port}/dagster")
    assert result.returncode != 0
    assert f"DAGSTER_PG_URL: nothing answers at 127.0.0.1:{port}" in result.stderr
    assert "PERSONA_AGENTS_RUN_BATCH_SIZE" in result.stderr
    assert "s3cret" not in result.stdout + result.stderr
    assert not (tmp_path / "cluster").exists()


def test_an_unprepared_personas_database_is_named_with_what_to_run(tmp_path):
    result = start(tmp_path, ELEVENLABS_API_KEY="sandbox-test-key",
                   PERSONAS_DATABASE_URL=f"sqlite:///{tmp_path / 'empty.db'}")
    assert result.returncode != 0
    assert "PERSONAS_DATABASE_URL" in result.stderr and "persona-agents db upgrade" in result.stderr
