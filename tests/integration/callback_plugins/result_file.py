"""A test-only callback: writes the last task result of an ad hoc run to the file ``RESULT_FILE`` names.

``run_module`` reads a module's result from it (what ansible-core's tree
callback did before it was deprecated), the way Ansible displays results:
through the callback's own ``_dump_results``.
"""
from __future__ import annotations

import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: result_file
type: aggregate
short_description: write the last task result to a file (engineops.fleet tests)
description: Writes the last task result, as JSON, to the file named by the RESULT_FILE environment variable.
requirements: [enabled in configuration]
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "result_file"
    CALLBACK_NEEDS_ENABLED = True

    def _write(self, result, **_flags) -> None:  # v2_runner_on_failed also gets ignore_errors
        with open(os.environ["RESULT_FILE"], "w", encoding="utf-8") as handle:
            handle.write(self._dump_results(result._result))

    v2_runner_on_ok = v2_runner_on_failed = v2_runner_on_skipped = v2_runner_on_unreachable = _write
