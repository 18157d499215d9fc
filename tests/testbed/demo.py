"""``make demo``: a fleet of reference Engines, a canary rollout and a bad release caught.

1. brings up the demo fleet: 12 reference Engines on the baseline release
   (``engine-demo-01`` .. ``engine-demo-12`` on 127.0.0.1:9001-9012) and
   shows every Engine healthy, and the inventory the engines inventory
   plugin makes of it (``inventories/demo/demo.engines.yml``);
2. with traffic flowing to every Engine, runs the upgrade playbook twice on
   ``inventories/demo``: a canary rollout to the safe patch (the canary is
   watched against the control cohort, then the rest go in batches), then a
   canary rollout to a release that answers wrong, which the canary's evals
   catch: the canary is rolled back and no other Engine is touched;
3. prints what the traffic saw (nothing lost) and where the rollout reports
   (JSON, Markdown, HTML) are.

Run it again for a fresh fleet and fresh rollouts (each run has its own
rollout ids). ``make demo-down`` removes the fleet.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from tests.engine_sim import releases
from tests.testbed.fleet import Fleet, status_rows
from tests.testbed.loadgen import LoadGenerator

DEMO_KEY = "demo-key-not-a-secret"  # the demo fleet's X-Engine-Key; local only
ROOT = Path(__file__).resolve().parents[2]
DEMO_DIR = Path.home() / ".ansible" / "engineops" / "demo"


def ansible_env(**extra: str) -> dict[str, str]:
    """The environment of the demo's Ansible runs: the key reaches the inventory's key_template as AWX injects it,
    and an inventory that cannot be read fails the run instead of leaving it without hosts."""
    return dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".ansible" / "collections"), ENGINE_KEY=DEMO_KEY,
                ANSIBLE_INVENTORY_UNPARSED_FAILED="1", **extra)


def show_inventory() -> int:
    """Print the demo inventory's groups as the engines inventory plugin finds them; the exit code."""
    cmd = [str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(ROOT / "inventories" / "demo"), "--graph"]
    print(f"\n$ {' '.join(cmd)}", flush=True)
    return subprocess.run(cmd, env=ansible_env(), cwd=ROOT, check=False).returncode


def rollout(name: str, extra: dict, run_id: str) -> tuple[int, list[Path]]:
    """Run the upgrade playbook on the demo inventory; its exit code and the report folders it wrote."""
    reports = DEMO_DIR / "reports"
    env = ansible_env(
        ANSIBLE_CALLBACKS_ENABLED="engineops.fleet.rollout_report",
        ANSIBLE_FORKS="12",
        ANSIBLE_DEPRECATION_WARNINGS="0",
        ENGINEOPS_ROLLOUT_REPORT_DIR=str(reports),
        ENGINEOPS_LEDGER_DIR=str(DEMO_DIR / "ledger"),
        ENGINEOPS_ROLLOUT_ID=f"demo-{run_id}-{name}",
    )
    before = set(reports.glob("*/report.html"))
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "engineops.fleet.upgrade",
           "-i", str(ROOT / "inventories" / "demo"), "-e", json.dumps(extra)]
    print(f"\n$ {' '.join(cmd)}", flush=True)
    proc = subprocess.run(cmd, env=env, cwd=ROOT, check=False)
    return proc.returncode, sorted(p.parent for p in set(reports.glob("*/report.html")) - before)


def main() -> int:
    fleet = Fleet("demo", 12, release="baseline", first_port=9001, key=DEMO_KEY, kind="demo")
    print(f"demo: starting {len(fleet.engines)} Engines on {fleet.image} ...", flush=True)
    fleet.down()
    fleet.up(wait=120)
    print(f"{'engine':<18} {'version':<8} {'url':<24} {'health':<8} {'uptime':>7}  subsystems")
    unhealthy = 0
    by_name = {row["name"]: row for row in status_rows(fleet.docker, fleet.prefix)}
    for engine in fleet.engines:
        report = engine.client(timeout=5).health()
        body = report.body if isinstance(report.body, dict) else {}
        subsystems = ", ".join(f"{k}={v}" for k, v in sorted((body.get("subsystems") or {}).items()))
        unhealthy += not report.ready
        print(
            f"{engine.name:<18} {by_name[engine.name]['version']:<8} {engine.url:<24} "
            f"{body.get('status', '-'):<8} {body.get('uptime_seconds', 0):>6.1f}s  {subsystems}"
        )
    print(f"\n{len(fleet.engines) - unhealthy}/{len(fleet.engines)} Engines healthy. X-Engine-Key for the demo: {DEMO_KEY}")
    if unhealthy or show_inventory() != 0:
        return 1

    run_id = time.strftime("%Y%m%dT%H%M%S")
    patch, bad = releases.tag("patch"), releases.tag("bad-answers")
    common = {"engine_rollout": "canary", "engine_canary_observe_seconds": 30}
    load = LoadGenerator(fleet.engines, seconds=3600, pause=0.05, max_turns=1_000_000).start()
    try:
        print(f"\n== 1. canary rollout to the safe patch {patch}, traffic flowing", flush=True)
        good_rc, good_reports = rollout("patch", {**common, "engine_target_version": patch}, run_id)
        print(f"\n== 2. canary rollout to {bad}, a release that answers wrong: the canary must catch it", flush=True)
        bad_rc, bad_reports = rollout("bad", {**common, "engine_target_version": bad}, run_id)
    finally:
        traffic = load.stop()
    on = {row["name"]: row["version"] for row in status_rows(fleet.docker, fleet.prefix)}
    print("\n== what happened")
    print(f"rollout to {patch}: {'done' if good_rc == 0 else f'FAILED (exit {good_rc})'}; "
          f"rollout to {bad}: {'caught and rolled back' if bad_rc != 0 else 'NOT CAUGHT'}")
    print(f"Engines now on: {', '.join(f'{v} x{n}' for v, n in sorted(Counter(on.values()).items()))}")
    print(f"traffic during the rollouts: {traffic.summary()}")
    for folder in good_reports + bad_reports:
        print(f"rollout report: {folder}/report.html (and report.md, report.json)")
    print("Remove the demo fleet with: make demo-down")
    ok = good_rc == 0 and bad_rc != 0 and not traffic.lost and set(on.values()) == {patch}
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
