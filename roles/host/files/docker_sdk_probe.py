# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Print, as JSON, what this Python offers the collection's modules.

The interpreter's path and version, the versions of the docker and requests
libraries (null where missing) and, with --ping, the Docker daemon's version
as the SDK reaches it from the environment (DOCKER_HOST, DOCKER_TLS_VERIFY,
DOCKER_CERT_PATH), or why it cannot.
"""
import json
import platform
import sys


def version_of(name):
    try:
        module = __import__(name)
    except Exception:  # a broken install is as good as none  # pylint: disable=broad-except
        return None
    return getattr(module, "__version__", None)


def daemon_version():
    try:
        import docker

        client = docker.from_env(version="auto", timeout=30)
        return client.version().get("Version"), None
    except Exception as exc:  # pylint: disable=broad-except
        return None, "%s: %s" % (type(exc).__name__, exc)


report = {
    "python": sys.executable,
    "python_version": platform.python_version(),
    "docker": version_of("docker"),
    "requests": version_of("requests"),
}
if "--ping" in sys.argv[1:]:
    report["daemon"], report["daemon_error"] = daemon_version()
print(json.dumps(report))
