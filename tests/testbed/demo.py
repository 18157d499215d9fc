"""``make demo``: bring up the demo fleet and show every Engine healthy.

The demo fleet is 12 reference Engines on the baseline release
(``engine-demo-01`` .. ``engine-demo-12`` on 127.0.0.1:9001-9012). The
rollout playbooks that upgrade it come with later issues; until then the
demo shows the fleet and says what the demo will do.
"""
from __future__ import annotations

import sys

from tests.testbed.fleet import Fleet, status_rows

DEMO_KEY = "demo-key-not-a-secret"  # the demo fleet's X-Engine-Key; local only

PLAN = """\
What the demo will do once the rollout playbooks land:
  1. a canary upgrade of this fleet to the safe patch 2.3.1, with traffic flowing;
  2. a batched upgrade to a bad release that the canary catches and rolls back;
  3. print where the rollout report is.
Remove the demo fleet with: make demo-down"""


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
    print(PLAN)
    return 1 if unhealthy else 0


if __name__ == "__main__":
    sys.exit(main())
