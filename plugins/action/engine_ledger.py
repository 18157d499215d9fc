# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""engine_ledger runs on the controller, in the controller's process.

The ledger is the controller's file, whatever host the task is for: there is
nothing to send to a target, and a rollout records some ten steps per Engine,
so starting a module process for each (with ``delegate_to: localhost``) would
cost a fork and a Python start-up every time. This action validates the
arguments against the module's own spec and runs the same code in-process.
"""

from __future__ import annotations

from typing import Any

from ansible.plugins.action import ActionBase

from ansible_collections.engineops.fleet.plugins.module_utils._ledger import ARGUMENT_SPEC, REQUIRED_IF, run_task


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        del tmp  # not used: nothing goes to the target
        _validation, params = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC, required_if=REQUIRED_IF)
        result.update(run_task(params, bool(self._play_context.check_mode), bool(self._play_context.diff)))
        return result
