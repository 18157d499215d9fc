"""Each bad release of the matrix regresses exactly its one signal.

One Engine per release gets the same traffic; the signals (health, error
share, P99 against the median, wrong answers, cache hit ratio, new warning
lines) are compared with the baseline's. The thresholds are far from both
sides so the test does not flake: the statistics proper are the
collection's job (engine_metrics), not this test's.
"""
from __future__ import annotations

import json
import re
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.engine_sim import releases
from tests.testbed.fleet import wait_for_exit

QUESTIONS = (
    "What is the capital of France?",
    "What is the capital of Japan?",
    "What is the capital of Italy?",
    "What is the capital of Spain?",
    "What is the capital of Canada?",
    "What is the capital of Australia?",
    "What is the capital of Germany?",
    "What is the capital of Egypt?",
    "What is 17 + 25?",
    "What is 6 times 7?",
    "What is 100 minus 58?",
    "What is 12 + 30?",
    "Return JSON for the user with id 7",
    "Return JSON for the order with id 12",
    "What is the boiling point of water at sea level in Celsius?",
    "How many days are in a leap year?",
    "What is the chemical symbol for gold?",
    "How many centimeters are in a meter?",
    "What planet is known as the Red Planet?",
    "What is the largest ocean on Earth?",
)
TURNS = 80  # each question four times: enough for a tail and an error share


def _signals(fleet) -> dict:
    engine = fleet.engines[0]
    client = engine.client(timeout=60)
    since = int(time.time())

    def turn(i: int):
        return client.execute(QUESTIONS[i % len(QUESTIONS)], f"sig-{fleet.prefix}-{i}")

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(turn, range(TURNS)))
    latencies = sorted(r.elapsed_ms for r in results)
    ok = [r for r in results if r.ok]
    usage_in = sum(r.usage.input_tokens for r in results)
    usage_hit = sum(r.usage.cache_hit_tokens for r in results)
    answers = {}
    for i, r in enumerate(results):
        if r.ok:
            answers.setdefault(QUESTIONS[i % len(QUESTIONS)], r.text)
    warnings = set()
    for line in fleet.container(engine).logs(since=since).decode().splitlines():
        record = json.loads(line)
        if record["level"] == "WARNING":
            warnings.add(re.sub(r"\d+|sig-\S+", "#", record["message"]))
    return {
        "error_share": 1 - len(ok) / len(results),
        "p99_over_median": latencies[int(0.99 * (len(latencies) - 1))] / statistics.median(latencies),
        "cache_ratio": usage_hit / usage_in,
        "answers": answers,
        "warnings": warnings,
    }


@pytest.fixture(scope="module")
def baseline_signals(docker_client):
    from tests.testbed.fleet import Fleet, free_port_block

    fleet = Fleet("tbase", 1, first_port=free_port_block(1), docker_client=docker_client)
    fleet.up()
    try:
        yield _signals(fleet)
    finally:
        fleet.down()


TURN_RELEASES = {
    "patch": set(),
    "bad-errors": {"errors"},
    "bad-latency": {"latency"},
    "bad-answers": {"answers"},
    "bad-cache": {"cache"},
    "bad-warning": {"warnings"},
}


@pytest.mark.parametrize("name", sorted(TURN_RELEASES))
def test_release_regresses_exactly_its_signal(make_fleet, baseline_signals, name):
    base = baseline_signals
    got = _signals(make_fleet(1, release=name))
    wrong = sum(got["answers"].get(q) != a for q, a in base["answers"].items() if q in got["answers"])
    regressed = set()
    if got["error_share"] > 0.1:
        regressed.add("errors")
    if got["p99_over_median"] > 3 * base["p99_over_median"]:
        regressed.add("latency")
    if wrong >= 3:
        regressed.add("answers")
    if got["cache_ratio"] < 0.5 * base["cache_ratio"]:
        regressed.add("cache")
    if got["warnings"] - base["warnings"]:
        regressed.add("warnings")
    assert regressed == TURN_RELEASES[name], got
    # The baseline itself is clean.
    assert base["error_share"] == 0 and base["warnings"] == set() and base["cache_ratio"] > 0.5


def _health(engine):
    try:
        return requests.get(engine.url + "/health", timeout=2)
    except requests.ConnectionError:
        return None


def test_bad_health_never_gets_ready(make_fleet):
    fleet = make_fleet(1, release="bad-health", start=False)
    engine = fleet.engines[0]
    fleet.seed(engine)
    container = fleet.start(engine)
    time.sleep(5)
    resp = _health(engine)
    assert resp is not None and resp.status_code == 503
    assert resp.json()["subsystems"]["llm_provider"] == "error" and resp.json()["status"] != "ok"
    container.reload()
    assert container.status == "running"


def test_bad_crash_exits_at_boot_with_an_error_line(make_fleet):
    fleet = make_fleet(1, release="bad-crash", start=False)
    engine = fleet.engines[0]
    fleet.seed(engine)
    container = fleet.start(engine)
    assert wait_for_exit(container) == 1
    errors = [json.loads(line) for line in container.logs().decode().splitlines() if '"ERROR"' in line]
    assert any("tool registry" in e["message"] for e in errors)


def test_bad_slowboot_is_not_ready_within_a_normal_deadline(make_fleet):
    fleet = make_fleet(1, release="bad-slowboot", start=False)
    engine = fleet.engines[0]
    fleet.seed(engine)
    fleet.start(engine)
    time.sleep(8)
    resp = _health(engine)
    assert resp is not None and resp.status_code == 503 and resp.json()["status"] == "starting"
    assert resp.json()["uptime_seconds"] >= 5


def test_bad_minor_migrates_and_answers_wrong(make_fleet, baseline_signals):
    fleet = make_fleet(1, release="bad-minor")
    got = _signals(fleet)
    wrong = sum(got["answers"].get(q) != a for q, a in baseline_signals["answers"].items())
    assert wrong >= 3
    assert got["error_share"] == 0
    import sqlite3

    with sqlite3.connect(f"file:{fleet.brain_path(fleet.engines[0])}?mode=ro", uri=True) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM schema_migrations ORDER BY id")]
    assert ids == list(releases.release("bad-minor").migrations)
