"""Smoke tests of the reference Engine (tests/engine_sim/app/engine.py), run
directly as a subprocess on the host: no Docker, a free port on 127.0.0.1
and a temporary brain. The Docker-based tests live elsewhere."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

APP = Path(__file__).resolve().parents[1] / "engine_sim" / "app"
PYTHON = shutil.which("python3") or sys.executable
KEY = "test-key"
BASE_ENV = {
    "LLM_PROVIDER": "openai",
    "LLM_API_KEY": "sk-provider-secret",
    "LLM_MODEL": "sim-model",
    "OPENAI_API_KEY": "sk-openai-secret",
    "ENGINE_API_KEY": KEY,
    "ENGINE_SIM_BOOT_SECONDS": "0",
    "ENGINE_SIM_MIGRATION_SECONDS": "0",
    "ENGINE_SIM_LATENCY_MS": "40",
    "ENGINE_SIM_HEARTBEAT_SECONDS": "0.2",
    "ENGINE_SIM_BACKGROUND_WRITE_SECONDS": "0.2",
}


def load_engine_module() -> Any:
    spec = importlib.util.spec_from_file_location("engine_sim_engine", APP / "engine.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


engine_module = load_engine_module()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sse(response: requests.Response) -> Iterator[dict[str, Any]]:
    """Parse an SSE body into {"type", "id", "data"} events."""
    event: dict[str, Any] = {}
    for line in response.iter_lines(decode_unicode=True):
        if not line:
            if event:
                yield event
            event = {}
        elif line.startswith("event: "):
            event["type"] = line[7:]
        elif line.startswith("id: "):
            event["id"] = int(line[4:])
        elif line.startswith("data: "):
            event["data"] = json.loads(line[6:])


class EngineProcess:
    """engine.py on a free port with a brain in a temporary folder."""

    def __init__(self, tmp: Path, db: Path | None = None, drop: tuple[str, ...] = (), **knobs: str) -> None:
        self.port = free_port()
        self.db = db or tmp / "data" / "brain.sqlite"
        self.log_path = tmp / f"engine-{self.port}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
        env.update(BASE_ENV, ENGINE_SIM_PORT=str(self.port), SQLITE_DB_PATH=str(self.db), **knobs)
        for name in drop:
            env.pop(name, None)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([PYTHON, str(APP / "engine.py")], env=env, stdout=log,
                                         stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"

    def health(self) -> requests.Response | None:
        try:
            return requests.get(self.url + "/health", timeout=2)
        except requests.ConnectionError:
            return None

    def wait_health(self, code: int = 200, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = self.health()
            if answer is not None and answer.status_code == code:
                return answer.json()
            assert self.proc.poll() is None, f"engine exited with {self.proc.returncode}: {self.logs()}"
            time.sleep(0.05)
        raise AssertionError(f"/health never answered {code}: {self.logs()}")

    def execute(self, message: str, task_id: str, stream: bool = False, **body: Any) -> requests.Response:
        return requests.post(self.url + "/execute", json={"message": message, "task_id": task_id, **body},
                             headers={"X-Engine-Key": KEY}, stream=stream, timeout=30)

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, headers={"X-Engine-Key": KEY}, timeout=10)

    def logs(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    started: list[EngineProcess] = []

    def _spawn(**kwargs: Any) -> EngineProcess:
        engine = EngineProcess(tmp_path, **kwargs)
        started.append(engine)
        return engine

    yield _spawn
    for engine in started:
        if engine.proc.poll() is None:
            engine.proc.kill()
            engine.proc.wait(5)


@pytest.fixture
def ready(spawn: Any) -> EngineProcess:
    engine = spawn()
    engine.wait_health()
    return engine


def conversation(db: Path, task_id: str) -> tuple[Any, ...] | None:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT status, final_text, turns FROM conversations WHERE task_id = ?",
                            (task_id,)).fetchone()
    finally:
        conn.close()


def test_health_auth_and_error_shapes(ready: EngineProcess) -> None:
    answer = requests.get(ready.url + "/health", timeout=5)
    body = answer.json()
    assert answer.status_code == 200
    assert body["status"] == "ok" and isinstance(body["uptime_seconds"], float)
    assert body["subsystems"] == {"database": "ok", "llm_provider": "ok", "asset_directory": "ok"}
    assert "version" not in answer.text.lower() and "version" not in str(answer.headers).lower()

    unauth = requests.post(ready.url + "/execute", json={"message": "hi", "task_id": "x"},
                           headers={"X-Engine-Key": "wrong"}, timeout=5)
    assert unauth.status_code == 401 and unauth.json()["error"] == "INVALID_KEY"
    missing = ready.get("/metrics")
    assert missing.status_code == 404 and set(missing.json()) == {"error", "message"}
    bad = requests.post(ready.url + "/execute", json={"message": "hi"}, headers={"X-Engine-Key": KEY}, timeout=5)
    assert bad.status_code == 400 and bad.json()["error"] == "INVALID_REQUEST" and "task_id" in bad.json()["message"]


def test_tool_turn_event_order_usage_and_determinism(ready: EngineProcess) -> None:
    events = list(sse(ready.execute("What is 12 + 30?", "t-arith")))
    types = [e["type"] for e in events if e["type"] != "heartbeat"]
    deltas = types.count("text_delta")
    assert types == (["thread_lifecycle", "tool_call", "usage", "tool_result"] + ["text_delta"] * deltas
                     + ["usage", "thread_lifecycle"])
    assert deltas >= 2
    assert [e["id"] for e in events] == sorted({e["id"] for e in events})
    assert events[1]["data"] == {"tool": "calculator", "input": {"expression": "12 + 30"}}
    text = "".join(e["data"]["text"] for e in events if e["type"] == "text_delta")
    assert "42" in text
    # The same message in this process gives the same answer: no hash(), no randomness.
    assert text == engine_module.FakeModel().reply("What is 12 + 30?").text
    usages = [e["data"] for e in events if e["type"] == "usage"]
    for usage in usages:
        assert usage["cache_hit_tokens"] == int(usage["input_tokens"] * 0.8)
    # Reusing the task id continues the thread: its history adds input tokens.
    again = [e["data"] for e in sse(ready.execute("What is 12 + 30?", "t-arith")) if e["type"] == "usage"]
    assert again[0]["input_tokens"] > usages[0]["input_tokens"]
    assert conversation(ready.db, "t-arith") == ("completed", text, 2)
    starts = [r for r in ready.logs() if r["message"] == "Starting execution"]
    assert len(starts) == 2 and starts[0]["task_id"] == "t-arith" and starts[0]["level"] == "INFO"
    completed = [r for r in ready.logs() if r["message"] == "Execution completed"]
    assert isinstance(completed[0]["extra"]["duration_ms"], int)
    assert all(set(r) == {"timestamp", "level", "logger", "request_id", "task_id", "message", "extra"}
               for r in ready.logs())


def test_disconnect_keeps_turn_and_replay(ready: EngineProcess) -> None:
    response = ready.execute("What is the capital of Japan? [sim:sleep=800]", "t-gone", stream=True)
    first = next(sse(response))
    assert first["data"] == {"phase": "started", "task_id": "t-gone"}
    response.close()
    deadline = time.monotonic() + 5
    while (conversation(ready.db, "t-gone") or ("",))[0] != "completed":
        assert time.monotonic() < deadline, "the turn did not complete after the client left"
        time.sleep(0.05)
    assert conversation(ready.db, "t-gone")[1] == "The capital of Japan is Tokyo."

    replay = list(sse(ready.get(f"/execute/replay?after={first['id']}")))
    assert all(e["id"] > first["id"] for e in replay)
    assert {"phase": "completed", "task_id": "t-gone"} in [e["data"] for e in replay]
    assert "".join(e["data"]["text"] for e in replay if e["type"] == "text_delta") == "The capital of Japan is Tokyo."


def test_export_and_import(ready: EngineProcess) -> None:
    list(sse(ready.execute("Return JSON for the user with id 7", "t-json")))
    bundle = ready.get("/memory/export").json()
    assert bundle["format"] == "engine-memory/1" and "schema_migrations" not in bundle["tables"]
    assert {"episodes", "conversations", "knowledge_store", "observability_events"} <= set(bundle["tables"])
    user = json.loads([r for r in bundle["tables"]["conversations"] if r["task_id"] == "t-json"][0]["final_text"])
    assert user["id"] == 7 and len(user) >= 5
    bundle["tables"]["knowledge_store"].append(
        {"key": "imported:1", "value": "v", "source": "test", "updated_at": "2026-01-01T00:00:00Z"})
    imported = requests.post(ready.url + "/memory/import", json=bundle, headers={"X-Engine-Key": KEY}, timeout=10)
    assert imported.status_code == 200
    counts = imported.json()["imported"]
    assert counts["knowledge_store"] == 1 and counts["episodes"] == 0


def test_sigterm_drains_in_flight_turn(spawn: Any) -> None:
    engine = spawn(ENGINE_SIM_EXIT_CODE="143")
    engine.wait_health()
    events: list[dict[str, Any]] = []
    reader = threading.Thread(target=lambda: events.extend(
        sse(engine.execute("Hold on [sim:sleep=1500]", "t-long", stream=True))))
    reader.start()
    while not events:
        time.sleep(0.02)
    engine.proc.send_signal(signal.SIGTERM)
    health = engine.wait_health(503, timeout=3)
    assert health["status"] == "draining"
    refused = engine.execute("new work", "t-new")
    assert refused.status_code == 503 and refused.json()["error"] == "DRAINING"
    assert engine.proc.wait(10) == 143
    reader.join(5)
    assert events[-1]["data"] == {"phase": "completed", "task_id": "t-long"}
    assert conversation(engine.db, "t-long")[0] == "completed"
    logs = engine.logs()
    shutdown = [r for r in logs if r["message"] == "Shutdown requested"]
    assert shutdown and shutdown[0]["extra"]["in_flight"] == 1
    assert any(r["message"] == "Drain complete" for r in logs)
    assert not any(secret in engine.log_path.read_text() for secret in ("sk-provider-secret", KEY))


def _whole_stream_left_open(port: int) -> tuple[socket.socket, bytes]:
    """A turn's whole stream read over a raw connection that the client then leaves open."""
    body = json.dumps({"message": "Hold on [sim:sleep=800]", "task_id": f"t-linger-{port}"}).encode()
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    client.sendall(b"POST /execute HTTP/1.1\r\nHost: x\r\nX-Engine-Key: " + KEY.encode()
                   + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    received = b""
    while b"0\r\n\r\n" not in received:
        received += client.recv(65536)
    return client, received


def test_a_drain_waits_for_the_client_to_close_a_finished_stream(spawn: Any) -> None:
    """The last bytes of a stream may still be in a proxy when the server wrote them: the drain
    waits until the client has closed the connection, and no longer than the flush grace."""
    engine = spawn()
    engine.wait_health()
    client, received = _whole_stream_left_open(engine.port)
    assert b'"phase": "completed"' in received
    engine.proc.send_signal(signal.SIGTERM)
    with pytest.raises(subprocess.TimeoutExpired):
        engine.proc.wait(0.8)  # the client still holds the connection
    assert client.recv(65536) == b""  # the server has said all it will say
    closed = time.monotonic()
    client.close()
    assert engine.proc.wait(10) == 0
    assert time.monotonic() - closed < 1.5
    drain = next(r for r in engine.logs() if r["message"] == "Drain complete")
    assert drain["extra"]["drain_seconds"] < engine_module.STREAM_FLUSH_GRACE_S + 0.5

    # A client that never closes holds the drain up for the flush grace, no longer.
    engine = spawn()
    engine.wait_health()
    holder, _received = _whole_stream_left_open(engine.port)
    began = time.monotonic()
    engine.proc.send_signal(signal.SIGTERM)
    assert engine.proc.wait(10) == 0
    assert time.monotonic() - began < engine_module.STREAM_FLUSH_GRACE_S + 2
    holder.close()


def test_sigkill_leaves_running_row(spawn: Any) -> None:
    engine = spawn()
    engine.wait_health()
    response = engine.execute("Long one [sim:sleep=5000]", "t-cut", stream=True)
    next(sse(response))
    engine.stop(signal.SIGKILL)
    response.close()
    assert conversation(engine.db, "t-cut")[0] == "running"


def test_migration_required_exit_and_serve(spawn: Any, tmp_path: Path) -> None:
    newer = spawn(ENGINE_SIM_MIGRATIONS="0001_init,0002_learning,0003_feedback")
    newer.wait_health()
    list(sse(newer.execute("What is 3 x 4?", "t-newer")))  # 0003's feedback and importance get written
    assert newer.stop() == 0
    conn = sqlite3.connect(newer.db)
    try:
        assert conn.execute("SELECT rating FROM feedback WHERE task_id = 't-newer'").fetchone() == (1,)
        assert conn.execute("SELECT importance FROM episodes WHERE task_id = 't-newer'").fetchone() == (0.8,)
    finally:
        conn.close()
    older = spawn(db=newer.db)
    assert older.proc.wait(10) == 3
    errors = [r for r in older.logs() if r["level"] == "ERROR"]
    assert errors[0]["extra"]["code"] == "MIGRATION_REQUIRED" and "0003_feedback" in errors[0]["message"]

    serving = spawn(db=newer.db, ENGINE_SIM_MIGRATION_REQUIRED="serve")
    health = serving.wait_health(503)
    assert health["status"] == "error" and health["subsystems"]["database"] == "error"
    refused = serving.execute("What is 1 + 1?", "t-old")
    assert refused.status_code == 503 and refused.json()["error"] == "MIGRATION_REQUIRED"


def test_missing_env_and_major_request_field(spawn: Any) -> None:
    broken = spawn(drop=("OPENAI_API_KEY",), ENGINE_SIM_REQUIRED_ENV_EXTRA="LLM_EMBEDDING_MODEL")
    assert broken.proc.wait(10) == 1
    error = [r for r in broken.logs() if r["level"] == "ERROR"][0]
    assert "OPENAI_API_KEY" in error["message"] and "LLM_EMBEDDING_MODEL" in error["message"]
    assert "sk-" not in broken.log_path.read_text()

    major = spawn(ENGINE_SIM_REQUEST_FIELD="prompt", ENGINE_SIM_REQUIRED_ENV_EXTRA="LLM_EMBEDDING_MODEL",
                  LLM_EMBEDDING_MODEL="embed")
    major.wait_health()
    renamed = major.execute("What is 2 + 2?", "t-major")
    assert renamed.status_code == 400 and "prompt" in renamed.json()["message"]
    ok = requests.post(major.url + "/execute", json={"prompt": "What is 2 + 2?", "task_id": "t-major"},
                       headers={"X-Engine-Key": KEY}, timeout=10)
    assert [e["data"] for e in sse(ok)][-1] == {"phase": "completed", "task_id": "t-major"}


def test_fake_model_facts_wrong_answers_and_json() -> None:
    facts = engine_module.FACTS
    assert len(facts) >= 40
    for question, fact in facts.items():
        assert fact.keyword in fact.answer and fact.keyword.lower() not in fact.wrong.lower(), question
    right, wrong = engine_module.FakeModel(0.0), engine_module.FakeModel(1.0)
    assert right.reply("what is the CAPITAL of france").text == "The capital of France is Paris."
    assert "Paris" not in wrong.reply("What is the capital of France?").text
    assert wrong.reply("What is 6 times 7?").text == "The answer is 43."
    share = engine_module.FakeModel(0.4)
    wrong_share = sum(share.reply(q).text != facts[q].answer for q in facts) / len(facts)
    assert 0.2 < wrong_share < 0.6
    for question in ("Return JSON for the user with id 7", "Return JSON for the status of order 12",
                     "Return JSON for the weather in Paris", "Return JSON for a list of 3 items",
                     "Return JSON for the config of service billing-api"):
        good, bad = json.loads(right.reply(question).text), json.loads(wrong.reply(question).text)
        assert len(good) >= 2 and good != bad and set(good) == set(bad), question
    ack = right.reply("Please remember my cat is called Tom")
    assert ack.kind == "ack" and ack == right.reply("please remember my cat is called tom!")


def test_seed_refuses_a_brain_with_rows(tmp_path: Path) -> None:
    db = tmp_path / "seeded" / "brain.sqlite"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_")}
    seed = [PYTHON, str(APP / "seed.py"), "--db", str(db)]
    first = subprocess.run(seed + ["--rows", "50"], env=env, capture_output=True, text=True, timeout=30, check=False)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["inserted"]["conversations"] == 10
    again = subprocess.run(seed + ["--rows", "5"], env=env, capture_output=True, text=True, timeout=30, check=False)
    assert again.returncode == 1 and "already holds 50 rows" in again.stderr
    forced = subprocess.run(seed + ["--rows", "5", "--force", "--size-mb", "2"], env=env,
                            capture_output=True, text=True, timeout=30, check=False)
    assert forced.returncode == 0, forced.stderr
    assert 1.9 * 2 ** 20 < db.stat().st_size < 2.5 * 2 ** 20
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT COUNT(*) FROM conversations WHERE status = 'completed'").fetchone()[0] == 11
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
