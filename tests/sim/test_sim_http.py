"""The reference Engine's HTTP surface, against real containers."""
from __future__ import annotations

import pytest
import requests

from ansible_collections.engineops.fleet.plugins.module_utils._engine_http import EngineHTTPError
from ansible_collections.engineops.fleet.plugins.module_utils._sse import SSEParser
from tests.testbed.fleet import wait_for_exit


def _events(engine, body: dict) -> list:
    """The raw SSE events of one /execute call, in order."""
    resp = requests.post(
        engine.url + "/execute", json=body, headers={"X-Engine-Key": engine.key}, stream=True, timeout=30
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    parser = SSEParser()
    events = []
    for chunk in resp.iter_content(chunk_size=None):
        events.extend(parser.feed(chunk))
    events.extend(parser.close())
    return events


def test_health_and_auth(make_fleet):
    engine = make_fleet(1).engines[0]
    resp = requests.get(engine.url + "/health", timeout=5)
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "ok"
    assert body["subsystems"] == {"database": "ok", "llm_provider": "ok", "asset_directory": "ok"}
    assert isinstance(body["uptime_seconds"], float) and body["uptime_seconds"] > 0
    # The running version is not reported by the Engine.
    assert "2.3.0" not in resp.text

    for headers in ({}, {"X-Engine-Key": "not-the-key"}):
        resp = requests.get(engine.url + "/memory/export", headers=headers, timeout=5)
        assert resp.status_code == 401
        assert set(resp.json()) == {"error", "message"}
        assert resp.json()["error"] == "INVALID_KEY"
        assert engine.key not in resp.text

    # Nothing beyond the contract on the port.
    for path in ("/metrics", "/version", "/ready", "/drain"):
        resp = requests.get(engine.url + path, headers={"X-Engine-Key": engine.key}, timeout=5)
        assert resp.status_code == 404, path
        assert set(resp.json()) == {"error", "message"}

    bundle = engine.client().export_memory()
    assert {"episodes", "knowledge_store", "conversations"} <= set(bundle["tables"])
    assert len(bundle["tables"]["episodes"]) > 0  # the seeded brain


def test_sse_order_and_tool_turn(make_fleet):
    engine = make_fleet(1).engines[0]
    events = _events(engine, {"message": "What is 17 + 25?", "task_id": "sse-order-1"})
    kinds = [e.event for e in events]
    assert events[0].event == "thread_lifecycle" and events[0].data == {"phase": "started", "task_id": "sse-order-1"}
    assert events[-1].event == "thread_lifecycle" and events[-1].data["phase"] == "completed"
    assert kinds.index("tool_call") < kinds.index("tool_result") < len(kinds) - 1
    tool_call = events[kinds.index("tool_call")].data
    assert tool_call["tool"] == "calculator"
    assert "42" in "".join(e.data["text"] for e in events if e.event == "text_delta")
    usages = [e.data for e in events if e.event == "usage"]
    assert usages and all(0 <= u["cache_hit_tokens"] <= u["input_tokens"] for u in usages)
    assert "error" not in kinds


def test_answers_are_deterministic_across_engines_and_the_patch(make_fleet):
    baseline = make_fleet(2)
    patch = make_fleet(1, release="patch")
    questions = ["What is the capital of France?", "Return JSON for the user with id 7", "What is 6 times 7?", "hello there"]
    for i, question in enumerate(questions):
        results = [e.client().execute(question, f"det-{i}-{n}") for n, e in enumerate(baseline.engines + patch.engines)]
        assert all(r.ok for r in results)
        assert len({r.text for r in results}) == 1, question
        assert len({r.usage.input_tokens for r in results}) == 1
        assert len({str(r.tool_calls) for r in results}) == 1


def test_thread_continues_and_grows_context(make_fleet):
    client = make_fleet(1).engines[0].client()
    first = client.execute("What is the capital of France?", "thread-1")
    second = client.execute("And of Italy?", "thread-1")
    fresh = client.execute("And of Italy?", "thread-2")
    assert first.ok and second.ok and fresh.ok
    assert second.usage.input_tokens > fresh.usage.input_tokens


def test_bad_requests_get_flat_errors(make_fleet):
    engine = make_fleet(1).engines[0]
    headers = {"X-Engine-Key": engine.key}
    resp = requests.post(engine.url + "/execute", json={"task_id": "x"}, headers=headers, timeout=5)
    assert resp.status_code == 400
    assert resp.json()["error"] == "INVALID_REQUEST" and "message" in resp.json()["message"]
    resp = requests.post(engine.url + "/execute", data=b"{not json", headers=headers, timeout=5)
    assert resp.status_code == 400 and set(resp.json()) == {"error", "message"}


def test_replay_returns_buffered_events(make_fleet):
    client = make_fleet(1).engines[0].client()
    result = client.execute("What is the capital of France?", "replay-1")
    assert result.ok
    replayed = client.replay(0)
    mine = [e for e in replayed if isinstance(e.data, dict) and e.data.get("task_id") == "replay-1"]
    assert [e.data["phase"] for e in mine] == ["started", "completed"]


def test_memory_export_import_round_trip(make_fleet):
    source, target = make_fleet(2).engines
    source.client().execute("What is the capital of France?", "export-1")
    bundle = source.client().export_memory()
    answer = target.client().import_memory(bundle)
    assert answer["imported"]["episodes"] >= 1
    after = target.client().export_memory()
    exported_ids = {row["task_id"] for row in bundle["tables"]["conversations"]}
    assert exported_ids <= {row["task_id"] for row in after["tables"]["conversations"]}


def test_major_needs_its_new_env_var_and_the_new_field(make_fleet):
    fleet = make_fleet(1, release="major", start=False)
    engine = fleet.engines[0]
    fleet.seed(engine)
    container = fleet.start(engine)
    assert wait_for_exit(container) == 1
    logs = container.logs().decode()
    assert "LLM_EMBEDDING_MODEL" in logs
    container.remove(force=True)

    fleet.start(engine, LLM_EMBEDDING_MODEL="sim-embed-1")
    fleet.wait_healthy(30)
    client = engine.client()
    with pytest.raises(EngineHTTPError) as err:
        client.execute("What is the capital of France?", "major-1")
    assert err.value.status == 400 and err.value.code == "INVALID_REQUEST"
    assert client.execute("What is the capital of France?", "major-2", field="prompt").ok
