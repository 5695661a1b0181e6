"""Every request body the client sends (create, patch) must satisfy the published OpenAPI document's
request schemas, so a payload the real API would refuse fails here first.

The schemas come from a vendored extract of ElevenLabs' OpenAPI document (tests/contract/), so the tests
run on any clone; `test_the_vendored_extract_matches_the_published_document` compares it with the full
published document (https://api.elevenlabs.io/openapi.json) where a copy is saved as PUBLISHED. Regenerate with
`python tests/test_openapi_contract.py path/to/elevenlabs-openapi.json`.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parent.parent
EXTRACT = REPO / "tests" / "contract" / "elevenlabs-agent-requests.openapi.json"
PUBLISHED = REPO.parent / "shared" / "elevenlabs-openapi.json"
CREATE = "Body_Create_Agent_v1_convai_agents_create_post"
PATCH = "Body_Patches_an_Agent_settings_v1_convai_agents__agent_id__patch"


def extract(document: dict) -> dict:
    """The request schemas of create and patch, with every schema they reference, as an OpenAPI fragment."""
    schemas = document["components"]["schemas"]
    needed, pending = set(), [CREATE, PATCH]
    while pending:
        name = pending.pop()
        if name not in needed:
            needed.add(name)
            pending.extend(_references(schemas[name]))
    return {"openapi": document["openapi"], "info": document["info"],
            "components": {"schemas": {name: schemas[name] for name in sorted(needed)}}}


def _references(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value.rsplit("/", 1)[-1]
            else:
                yield from _references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)


if __name__ == "__main__":
    source = Path(sys.argv[1] if len(sys.argv) > 1 else PUBLISHED)
    EXTRACT.write_text(json.dumps(extract(json.loads(source.read_text())), indent=1, sort_keys=True) + "\n")
    sys.exit(0)

from jsonschema import Draft202012Validator  # noqa: E402  (not needed to regenerate the extract)
from sqlalchemy import text  # noqa: E402

from persona_agents_pipeline.config import Settings  # noqa: E402
from persona_agents_pipeline.provisioning import ProvisioningService  # noqa: E402
from persona_agents_pipeline.persona_validation import PersonaSpec  # noqa: E402
from persona_agents_pipeline.voice_policy import AgentTemplate  # noqa: E402

FRAGMENT = json.loads(EXTRACT.read_text())


def validator(schema_name: str) -> Draft202012Validator:
    # OpenAPI 3.1 schemas are JSON Schema 2020-12; refs resolve inside the fragment.
    return Draft202012Validator({**FRAGMENT, "$ref": f"#/components/schemas/{schema_name}"})


CREATE_BODY, PATCH_BODY = validator(CREATE), validator(PATCH)


def problems(body_validator: Draft202012Validator, body: dict) -> list[str]:
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in body_validator.iter_errors(body)]


def test_the_vendored_extract_matches_the_published_document():
    if not PUBLISHED.exists():
        pytest.skip(f"the published OpenAPI document is not at {PUBLISHED}; the vendored extract is used as is")
    assert extract(json.loads(PUBLISHED.read_text())) == FRAGMENT, "regenerate: python tests/test_openapi_contract.py"


traits = st.floats(min_value=0, max_value=1, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(persona_id=st.integers(1, 2**31 - 1), name=st.text(min_size=1, max_size=80).filter(str.strip),
       temper=traits, chattiness=traits, attachment=traits, description=st.none() | st.text(max_size=400))
def test_every_create_and_patch_body_satisfies_the_published_schemas(persona_id, name, temper, chattiness,
                                                                        attachment, description):
    body = AgentTemplate().payload(PersonaSpec(persona_id, name.strip(), temper, chattiness, attachment, description))
    assert problems(CREATE_BODY, body) == []
    assert problems(PATCH_BODY, body) == []  # update_agent sends the same complete body


@pytest.mark.parametrize("spoil, where", [
    (lambda body: body.pop("conversation_config"), ""),
    (lambda body: body["conversation_config"]["tts"].update(stability="high"), "conversation_config/tts/stability"),
    (lambda body: body["conversation_config"]["tts"].update(model_id="eleven_imaginary_v9"), "conversation_config/tts/model_id"),
    (lambda body: body["conversation_config"]["agent"]["prompt"].update(llm="no-such-llm"), "conversation_config/agent/prompt/llm"),
    (lambda body: body.update(tags="persona-agents"), "tags"),
])
def test_a_body_the_real_api_would_refuse_fails_the_contract(spoil, where):
    body = copy.deepcopy(AgentTemplate().payload(PersonaSpec(1, "Ada", 0.5, 0.5, 0.5, None)))
    spoil(body)
    found = problems(CREATE_BODY, body)
    assert found and any(problem.startswith(where) for problem in found), found


def test_the_bodies_the_service_really_sends_satisfy_the_schemas(store, sandbox):
    """Captured on the wire: every POST create and PATCH of a provisioning pass and a traits update."""
    ids = store.add_personas([{"name": f"Contract {n}", "temper_level": n / 9, "chattiness": 1 - n / 9,
                               "emotional_attachment": 0.5, "description": "Checks the contract."} for n in range(10)])
    service = ProvisioningService.from_settings(Settings(database_url=store.database_url, base_url=sandbox.url),
                                                api_key="sandbox-test-key", store=store)
    sent: list[tuple[str, dict]] = []
    service.client._session.hooks["response"].append(
        lambda response, **_: sent.append((response.request.method, json.loads(response.request.body)))
        if response.request.method in ("POST", "PATCH") else None)
    service.provision_many(ids)
    with store.engine.begin() as connection:  # traits change, so update_agent PATCHes the agents
        connection.execute(text("UPDATE personas SET temper_level = 1 - temper_level"))
    for persona_id in ids:
        service.update_agent(persona_id)
    assert [method for method, _ in sent].count("POST") == len(ids)
    assert [method for method, _ in sent].count("PATCH") == len(ids)
    for method, body in sent:
        assert problems(CREATE_BODY if method == "POST" else PATCH_BODY, body) == [], (method, body)
