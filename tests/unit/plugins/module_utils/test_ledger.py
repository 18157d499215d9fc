# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json
import os
import stat
import threading

import pytest
from ansible.release import __version__ as ansible_version

from ansible_collections.engineops.fleet.plugins.module_utils import _ledger as ledger
from ansible_collections.engineops.fleet.plugins.module_utils._ledger import (
    LEDGER_FORMAT,
    REDACTED,
    LedgerNameError,
    LedgerRecordError,
    append_step,
    default_rollout_id,
    is_secret_key,
    list_records,
    new_record,
    read_record,
    record_path,
    record_step,
    redact,
    resume_action,
    schema_state,
    state_path,
)
from ansible_collections.engineops.fleet.plugins.module_utils._version import VersionError

T0 = "2026-05-01T10:00:00Z"


# -- redaction ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["engine_key", "X-Engine-Key", "LLM_API_KEY", "OPENAI_API_KEY", "apiKey", "key",
                                  "ENGINE_KEY_HASH", "access_token", "input_tokens", "refreshToken", "client_secret",
                                  "secrets", "db_password", "PASSWORD", "passwd", "ssh_passphrase", "private_key",
                                  "Authorization", "aws_credentials", "keys"])
def test_secret_key_names(name):
    assert is_secret_key(name)


@pytest.mark.parametrize("name", ["keywords", "engine", "status", "version", "image", "turns", "monitoring",
                                  "fingerprint", "", None, 3])
def test_plain_key_names(name):
    assert not is_secret_key(name)


def test_redact_walks_dicts_lists_and_env_strings():
    data = {
        "engine_key": "s3cr3t",
        "nested": [{"LLM_API_KEY": "sk-123", "model": "m"}, ("x", {"password": 42})],
        "env": ["LLM_API_KEY=sk-456", "LLM_MODEL=gpt", "OPENAI_API_KEY: sk-789"],
        "headers": {"X-Engine-Key": "abc", "Accept": "text/event-stream"},
        "empty_token": "",
        "keywords": ["Rome"],
    }
    out = redact(data)
    text = json.dumps(out)
    for secret in ("s3cr3t", "sk-123", "sk-456", "sk-789", "abc", "42"):
        assert secret not in text
    assert out["engine_key"] == REDACTED
    assert out["nested"][0] == {"LLM_API_KEY": REDACTED, "model": "m"}
    assert out["nested"][1] == ["x", {"password": REDACTED}]
    assert out["env"] == [f"LLM_API_KEY={REDACTED}", "LLM_MODEL=gpt", f"OPENAI_API_KEY={REDACTED}"]
    assert out["headers"]["Accept"] == "text/event-stream"
    assert out["empty_token"] == "" and out["keywords"] == ["Rome"]
    assert data["engine_key"] == "s3cr3t"  # the input is left alone


def test_compact_drops_ansible_bookkeeping_and_cuts_long_values():
    evidence = {"invocation": {"module_args": {"engine_key": "x"}}, "_ansible_no_log": False, "diff": {},
                "cases": list(range(120)), "answer": "a" * 5000, "changed": True, "obj": object()}
    out = ledger.compact(evidence)
    assert "invocation" not in out and "_ansible_no_log" not in out and "diff" not in out
    assert len(out["cases"]) == 51 and out["cases"][-1] == "(70 more items cut)"
    assert out["answer"].endswith("(1000 more characters cut)") and out["changed"] is True
    assert isinstance(out["obj"], str)


# -- names ------------------------------------------------------------------------------

@pytest.mark.parametrize("target, operation, expected", [
    ("2.4.0", "upgrade", "upgrade-2.4.0"),
    ("v2.4.0", "upgrade", "upgrade-2.4.0"),
    ("2.4.0-rc.1+build.5", "upgrade", "upgrade-2.4.0-rc.1"),
    ("registry.example.com/september-engine:2.4.0", "rollback", "rollback-2.4.0"),
])
def test_default_rollout_id(target, operation, expected):
    assert default_rollout_id(target, operation) == expected


@pytest.mark.parametrize("target, operation", [("latest", "upgrade"), ("2.4", "upgrade"), ("2.4.0", "../x"),
                                               ("2.4.0", "")])
def test_default_rollout_id_refuses(target, operation):
    with pytest.raises(LedgerNameError):
        default_rollout_id(target, operation)


@pytest.mark.parametrize("rollout_id, engine", [
    ("../etc", "engine-1"), ("..", "engine-1"), ("a/b", "engine-1"), (".hidden", "engine-1"), ("", "engine-1"),
    ("upgrade-2.4.0", "../engine"), ("upgrade-2.4.0", "a/b"), ("upgrade-2.4.0", "-x"), ("upgrade-2.4.0", "x" * 129),
    ("upgrade-2.4.0", "host:22"), ("upgrade-2.4.0", "a..b"),
])
def test_record_path_refuses_path_escapes(tmp_path, rollout_id, engine):
    with pytest.raises(LedgerNameError):
        record_path(str(tmp_path), rollout_id, engine)


def test_record_path_refuses_a_symlinked_record(tmp_path):
    (tmp_path / "r1").mkdir()
    os.symlink("/etc/passwd", tmp_path / "r1" / "engine-1.json")
    with pytest.raises(LedgerNameError, match="outside"):
        record_path(str(tmp_path), "r1", "engine-1")


def test_record_path_layout(tmp_path):
    assert record_path(str(tmp_path), "upgrade-2.4.0", "engine-042") == str(
        tmp_path.resolve() / "upgrade-2.4.0" / "engine-042.json")


# -- records ----------------------------------------------------------------------------

def test_append_step_keeps_history_and_sets_status():
    record = new_record("upgrade-2.4.0", "engine-1", now=T0)
    record, step = append_step(record, "preflight", status="preflight_done", now="2026-05-01T10:00:05Z",
                               started="2026-05-01T10:00:01Z", inputs={"target": "2.4.0", "engine_key": "k"},
                               facts={"from_version": "2.3.0", "fingerprint_before": "fp1"}, note="fine")
    assert step == {"seq": 1, "step": "preflight", "time": "2026-05-01T10:00:05Z", "outcome": "ok",
                    "status_before": "pending", "status": "preflight_done", "started": "2026-05-01T10:00:01Z",
                    "duration_seconds": 4.0, "note": "fine", "inputs": {"target": "2.4.0", "engine_key": REDACTED}}
    assert record["status"] == "preflight_done" and record["updated"] == "2026-05-01T10:00:05Z"
    assert record["facts"] == {"from_version": "2.3.0", "fingerprint_before": "fp1"}
    record2, step2 = append_step(record, "evals", outcome="inconclusive", evidence={"verdict": "inconclusive"})
    assert step2["seq"] == 2 and step2["status"] == "preflight_done" and record2["status"] == "preflight_done"
    assert len(record["steps"]) == 1  # the input record is not changed
    record3, step3 = append_step(record2, "verify", outcome="failed")
    assert step3["status"] == "failed" and record3["status"] == "failed"
    record4, step4 = append_step(record3, "rollback", outcome="failed", status="rolling_back")
    assert record4["status"] == "rolling_back" and step4["status_before"] == "failed"


@pytest.mark.parametrize("kwargs, match", [
    ({"step": ""}, "name"), ({"step": "x", "outcome": "great"}, "Outcome"), ({"step": "x", "status": "done"}, "Status"),
    ({"step": "x", "started": "yesterday"}, "started"),
])
def test_append_step_refuses(kwargs, match):
    with pytest.raises(LedgerRecordError, match=match):
        append_step(new_record("r", "e"), **kwargs)


def test_record_step_writes_atomically_with_private_modes(tmp_path):
    result = record_step(str(tmp_path), "upgrade-2.4.0", "engine-1", "preflight", target_version="2.4.0",
                         status="preflight_done", evidence={"free_bytes": 10, "token": "t0k3n"})
    assert result.written and result.before is None
    path = tmp_path / "upgrade-2.4.0" / "engine-1.json"
    assert result.path == str(path.resolve()) or result.path == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    data = json.loads(path.read_text())
    assert data["format"] == LEDGER_FORMAT and data["facts"]["target_version"] == "2.4.0"
    assert data["steps"][0]["evidence"] == {"free_bytes": 10, "token": REDACTED}
    assert "t0k3n" not in path.read_text()
    again = record_step(str(tmp_path), "upgrade-2.4.0", "engine-1", "snapshot", status="snapshotted")
    assert again.before["status"] == "preflight_done" and len(read_record(str(path))["steps"]) == 2
    assert [p.name for p in path.parent.iterdir() if not p.name.startswith(".")] == ["engine-1.json"]


def test_record_step_dry_run_writes_nothing(tmp_path):
    result = record_step(str(tmp_path), "upgrade-2.4.0", "engine-1", "drain", dry_run=True, status="drained")
    assert not result.written and result.step["planned"] is True and result.record["status"] == "drained"
    assert not (tmp_path / "upgrade-2.4.0").exists()


def test_record_step_keeps_a_corrupt_record(tmp_path):
    folder = tmp_path / "r1"
    folder.mkdir()
    (folder / "engine-1.json").write_text("{not json")
    with pytest.raises(LedgerRecordError, match="not valid JSON"):
        record_step(str(tmp_path), "r1", "engine-1", "drain")
    assert (folder / "engine-1.json").read_text() == "{not json"


def test_record_step_refuses_a_record_of_another_engine(tmp_path):
    record_step(str(tmp_path), "r1", "engine-1", "drain")
    os.replace(tmp_path / "r1" / "engine-1.json", tmp_path / "r1" / "engine-2.json")
    with pytest.raises(LedgerRecordError, match="engine-1"):
        record_step(str(tmp_path), "r1", "engine-2", "drain")


def test_concurrent_steps_are_all_kept(tmp_path):
    errors = []

    def worker(n):
        try:
            for i in range(10):
                record_step(str(tmp_path), "r1", "engine-1", f"w{n}-{i}")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    record = read_record(str(tmp_path / "r1" / "engine-1.json"))
    assert [s["seq"] for s in record["steps"]] == list(range(1, 41))


def test_list_records_skips_unreadable_files(tmp_path):
    record_step(str(tmp_path), "r1", "engine-2", "drain")
    record_step(str(tmp_path), "r1", "engine-1", "drain")
    (tmp_path / "r1" / "broken.json").write_text("[]")
    (tmp_path / "r1" / "notes.txt").write_text("x")
    records, skipped = list_records(str(tmp_path), "r1")
    assert [r["engine"] for r in records] == ["engine-1", "engine-2"]
    assert skipped and skipped[0][0] == "broken.json"
    assert list_records(str(tmp_path), "none") == ([], [])


@pytest.mark.parametrize("mutate, match", [
    (lambda r: r.update(format="other/1"), "format"),
    (lambda r: r.update(status="done"), "status"),
    (lambda r: r.update(steps={}), "steps"),
    (lambda r: r.update(facts=[]), "facts"),
    (lambda r: r["steps"].append({"step": "x", "outcome": "meh"}), "outcome"),
    (lambda r: r.update(engine=""), "engine"),
])
def test_validate_record(mutate, match):
    record = new_record("r1", "engine-1")
    mutate(record)
    with pytest.raises(LedgerRecordError, match=match):
        ledger.validate_record(record)


# -- resume -----------------------------------------------------------------------------

FLOWS = {
    "preflight": [("preflight", "preflight_done")],
    "snapshot": [("preflight", "preflight_done"), ("snapshot", "snapshotted")],
    "drain": [("preflight", "preflight_done"), ("snapshot", "snapshotted"), ("drain", "drained")],
    "swap": [("preflight", "preflight_done"), ("snapshot", "snapshotted"), ("drain", "drained"), ("swap", "swapped")],
    "health": [("preflight", "preflight_done"), ("snapshot", "snapshotted"), ("drain", "drained"),
               ("swap", "swapped"), ("health", "healthy")],
    "verified": [("preflight", "preflight_done"), ("snapshot", "snapshotted"), ("drain", "drained"),
                 ("swap", "swapped"), ("health", "healthy"), ("verify", "verified")],
    "failed_preflight": [("preflight", "failed")],
    "failed_verify": [("preflight", "preflight_done"), ("snapshot", "snapshotted"), ("drain", "drained"),
                      ("swap", "swapped"), ("health", "healthy"), ("verify", "failed")],
    "rolling_back": [("preflight", "preflight_done"), ("snapshot", "snapshotted"), ("drain", "drained"),
                     ("swap", "swapped"), ("health", "failed"), ("rollback", "rolling_back")],
    "rolled_back": [("preflight", "preflight_done"), ("snapshot", "snapshotted"), ("drain", "drained"),
                    ("swap", "swapped"), ("verify", "failed"), ("rollback", "rolling_back"),
                    ("rollback_verify", "rolled_back")],
    "quarantined": [("preflight", "preflight_done"), ("verify", "failed"), ("quarantine", "quarantined")],
    "pending": [("plan", "pending")],
}


def make_record(flow, target="2.4.0", fingerprint_before="fp-old", fingerprint_after=None):
    if flow is None:
        return None
    record = new_record("upgrade-2.4.0", "engine-1", now=T0)
    facts = {"target_version": target, "from_version": "2.3.0"}
    if fingerprint_before:
        facts["fingerprint_before"] = fingerprint_before
    if fingerprint_after:
        facts["fingerprint_after"] = fingerprint_after
    for step, status in FLOWS[flow]:
        outcome = "failed" if status == "failed" else "ok"
        record, _step = append_step(record, step, outcome=outcome, status=status, facts=facts)
    return record


# (id, flow, current version, current fingerprint, running, retry, expected action, words in the reason)
RESUME_TABLE = [
    ("no record", None, "2.3.0", "fp-old", True, False, "start", "nothing recorded"),
    ("no record, already on target", None, "2.4.0", "fp-new", True, False, "start", "already runs 2.4.0"),
    ("plan only", "pending", "2.3.0", "fp-old", True, False, "start", "before the drain"),
    ("after preflight", "preflight", "2.3.0", "fp-old", True, False, "start", "not touched"),
    ("after snapshot", "snapshot", "2.3.0", "fp-old", True, False, "start", "not touched"),
    ("after snapshot, version unreadable", "snapshot", None, None, None, False, "start", "not touched"),
    ("after snapshot, stopped: unrecorded drain", "snapshot", "2.3.0", "fp-old", False, False, "finish_upgrade",
     "drain ran but was not recorded"),
    ("after snapshot, yet on target", "snapshot", "2.4.0", "fp-new", True, False, "finish_upgrade",
     "already runs 2.4.0"),
    ("after snapshot, schema moved under the old version", "snapshot", "2.3.0", "fp-new", True, False, "rollback",
     "schema changed"),
    ("drained, swap not done", "drain", "2.3.0", "fp-old", False, False, "finish_upgrade", "before the swap"),
    ("drained, swap not done, no fingerprint", "drain", "2.3.0", None, False, False, "finish_upgrade",
     "before the swap"),
    ("drained, swap done but not recorded", "drain", "2.4.0", "fp-new", True, False, "finish_upgrade",
     "between the swap and the verification"),
    ("drained, migrated, back on the old tag", "drain", "2.3.0", "fp-new", False, False, "rollback", "mid-swap"),
    ("swapped, booting on target", "swap", "2.4.0", "fp-new", True, False, "finish_upgrade", "finish and verify"),
    ("swapped, on target, schema unchanged", "swap", "2.4.0", "fp-old", True, False, "finish_upgrade",
     "finish and verify"),
    ("swapped, old tag, schema changed", "swap", "2.3.0", "fp-new", False, False, "rollback", "mid-swap"),
    ("swapped, old tag, schema unchanged", "swap", "2.3.0", "fp-old", False, False, "finish_upgrade",
     "unmigrated brain"),
    ("swapped, old tag, schema unknown", "swap", "2.3.0", None, False, False, "rollback",
     "schema cannot be compared"),
    ("swapped, container gone", "swap", None, None, None, False, "rollback", "cannot be read"),
    ("healthy, verify not done", "health", "2.4.0", "fp-new", True, False, "finish_upgrade", "verify"),
    ("healthy, then reverted by hand, migrated", "health", "2.3.0", "fp-new", True, False, "rollback", "mid-swap"),
    ("verified on target", "verified", "2.4.0", "fp-new", True, False, "skip", "already on 2.4.0 and verified"),
    ("verified on target, v prefix tag", "verified", "v2.4.0", "fp-new", True, False, "skip", "verified"),
    ("verified, since moved back, migrated brain", "verified", "2.3.0", "fp-new", True, False, "rollback",
     "migrated"),
    ("verified, since moved back, same schema", "verified", "2.3.0", "fp-old", True, False, "start",
     "upgrade again"),
    ("failed in preflight, untouched", "failed_preflight", "2.3.0", "fp-old", True, False, "start",
     "before the Engine was touched"),
    ("failed in preflight, engine stopped", "failed_preflight", "2.3.0", "fp-old", False, False, "rollback",
     "after the Engine was touched"),
    ("failed verify on target", "failed_verify", "2.4.0", "fp-new", True, False, "rollback", "failed at step"),
    ("caught rolling back", "rolling_back", "2.3.0", "fp-new", False, False, "rollback", "finish the rollback"),
    ("rolled back", "rolled_back", "2.3.0", "fp-old", True, False, "skip", "not retried"),
    ("rolled back, retry asked", "rolled_back", "2.3.0", "fp-old", True, True, "start", "retried"),
    ("rolled back, yet on target", "rolled_back", "2.4.0", "fp-new", True, False, "finish_upgrade", "verify"),
    ("quarantined", "quarantined", "2.4.0", "fp-new", True, False, "skip", "quarantined"),
]


@pytest.mark.parametrize("flow, current, fingerprint, running, retry, action, words",
                         [row[1:] for row in RESUME_TABLE], ids=[row[0] for row in RESUME_TABLE])
def test_resume_action_table(flow, current, fingerprint, running, retry, action, words):
    decision = resume_action(make_record(flow), current, "2.4.0", current_fingerprint=fingerprint,
                             engine_running=running, retry_rolled_back=retry)
    assert decision.action == action, decision.reason
    assert words in decision.reason
    assert decision.to_dict()["action"] == action and decision.target_version == "2.4.0"


def test_resume_uses_the_recorded_fingerprint_after_when_none_is_given():
    record = make_record("swap", fingerprint_after="fp-new")
    assert resume_action(record, "2.3.0", "2.4.0").action == "rollback"
    assert resume_action(record, "2.3.0", "2.4.0").schema == "changed"
    assert schema_state(record, "fp-old") == "unchanged"
    assert schema_state(make_record("swap", fingerprint_before=None), "fp-old") == "unknown"


def test_resume_with_a_record_of_another_target():
    stale_done = make_record("verified", target="2.3.5")
    assert resume_action(stale_done, "2.3.5", "2.4.0").action == "start"
    stale_mid = make_record("swap", target="2.3.5")
    decision = resume_action(stale_mid, "2.3.5", "2.4.0")
    assert decision.action == "rollback" and "2.3.5" in decision.reason


def test_resume_refuses_a_bad_target():
    with pytest.raises(VersionError):
        resume_action(None, "2.3.0", "latest")


# -- the module -------------------------------------------------------------------------

# ansible-core 2.20+ echoes the arguments only when asked; 2.19 always does.
INJECT_INVOCATION = {} if ansible_version.startswith("2.19.") else {"_ansible_inject_invocation": True}


def run_module(args, capsys):
    from ansible.module_utils.testing import patch_module_args

    from ansible_collections.engineops.fleet.plugins.modules import engine_ledger

    with patch_module_args(args):
        with pytest.raises(SystemExit):
            engine_ledger.main()
    return json.loads(capsys.readouterr().out)


def test_module_records_reads_and_resumes(capsys, tmp_path):
    base = {"ledger_dir": str(tmp_path), "target_version": "2.4.0", "engine": "engine-1"}
    out = run_module(dict(base, step="preflight", status="preflight_done", inputs={"engine_key": "k3y"},
                          facts={"from_version": "2.3.0", "fingerprint_before": "fp-old"}, **INJECT_INVOCATION), capsys)
    assert out["changed"] and out["rollout_id"] == "upgrade-2.4.0" and not out["exists"]
    assert out["recorded"]["inputs"] == {"engine_key": REDACTED} and "k3y" not in json.dumps(out)
    # Ansible echoes the arguments back: the module echoes them redacted.
    assert out["invocation"]["module_args"]["inputs"] == {"engine_key": REDACTED}
    out = run_module(dict(base, step="drain", status="drained", _ansible_check_mode=True, _ansible_diff=True), capsys)
    assert out["changed"] and out["recorded"]["planned"] and "Would record step 'drain'" in out["msg"]
    assert out["diff"]["before"] == {"status": "preflight_done", "steps": 1}
    assert out["diff"]["after"] == {"status": "drained", "steps": 2}
    assert len(read_record(out["path"])["steps"]) == 1
    out = run_module(dict(base, state="read", current_version="2.3.0", current_fingerprint="fp-old",
                          engine_running=True), capsys)
    assert not out["changed"] and out["exists"] and out["resume"]["action"] == "start"
    out = run_module({"ledger_dir": str(tmp_path), "state": "read", "rollout_id": "upgrade-2.4.0"}, capsys)
    assert [r["engine"] for r in out["records"]] == ["engine-1"] and out["skipped"] == []


@pytest.mark.parametrize("args, match", [
    ({"engine": "engine-1", "step": "x"}, "set rollout_id"),
    ({"engine": "engine-1", "step": "x", "rollout_id": "../up"}, "cannot name"),
    ({"engine": "../e", "step": "x", "rollout_id": "r1"}, "cannot name"),
    ({"engine": "engine-1", "rollout_id": "r1"}, "step"),
    ({"engine": "engine-1", "step": "x", "rollout_id": "r1", "started": "noon"}, "started"),
    ({"engine": "engine-1", "state": "read", "rollout_id": "r1", "target_version": "latest"}, "not pinned"),
])
def test_module_failures_say_why(capsys, tmp_path, monkeypatch, args, match):
    monkeypatch.delenv("ENGINEOPS_ROLLOUT_ID", raising=False)
    out = run_module(dict(args, ledger_dir=str(tmp_path)), capsys)
    assert out["failed"] and match in out["msg"], out["msg"]


def test_module_reads_the_ledger_dir_from_the_environment(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ENGINEOPS_LEDGER_DIR", str(tmp_path / "env-ledger"))
    monkeypatch.setenv("ENGINEOPS_ROLLOUT_ID", "drill-1")
    out = run_module({"engine": "engine-1", "step": "note"}, capsys)
    assert out["path"] == str(tmp_path / "env-ledger" / "drill-1" / "engine-1.json")


@pytest.mark.parametrize("explicit, state_dir, expected", [
    (None, None, os.path.expanduser("~/.ansible/engineops/ledger")),
    (None, "/srv/engineops", "/srv/engineops/ledger"),
    ("/var/ledger", "/srv/engineops", "/var/ledger"),
    ("", "/srv/engineops", "/srv/engineops/ledger"),
    (None, "~/state", os.path.expanduser("~/state/ledger")),
])
def test_state_path_puts_each_kind_of_state_under_the_state_dir_unless_set(explicit, state_dir, expected):
    assert state_path(explicit, state_dir, "ledger") == expected


def test_state_path_makes_a_relative_state_dir_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert state_path(None, "state", "reports") == str(tmp_path / "state" / "reports")


def test_module_keeps_the_ledger_under_the_state_dir_from_the_environment(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("ENGINEOPS_LEDGER_DIR", raising=False)
    monkeypatch.setenv("ENGINEOPS_STATE_DIR", str(tmp_path / "state"))
    out = run_module({"engine": "engine-1", "step": "note", "rollout_id": "drill-1"}, capsys)
    assert out["ledger_dir"] == str(tmp_path / "state" / "ledger")
    assert os.path.isfile(tmp_path / "state" / "ledger" / "drill-1" / "engine-1.json")
    # The ledger's own setting wins over the state dir, from the environment or the task.
    monkeypatch.setenv("ENGINEOPS_LEDGER_DIR", str(tmp_path / "env-ledger"))
    out = run_module({"engine": "engine-1", "step": "note", "rollout_id": "drill-1"}, capsys)
    assert out["ledger_dir"] == str(tmp_path / "env-ledger")
    out = run_module({"engine": "engine-1", "step": "note", "rollout_id": "drill-1",
                      "ledger_dir": str(tmp_path / "task-ledger")}, capsys)
    assert out["ledger_dir"] == str(tmp_path / "task-ledger")
