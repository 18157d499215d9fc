"""A second Docker daemon that requires TLS client certificates, and an HTTPS front for an Engine.

:func:`make_pki` writes a CA, a server certificate (127.0.0.1, localhost,
``SERVER_NAME``), a client certificate the CA signed and one a stranger CA
signed, with ``openssl``. :class:`TLSDockerd` runs ``dockerd --tlsverify``
in a test bed Docker host container, published on ``tcp://127.0.0.1:<port>``. :class:`TLSFront` is a
TLS-terminating TCP forwarder on 127.0.0.1, so an Engine's plain HTTP port
can be reached as ``https://``; :class:`Front` forwards plain TCP on 127.0.0.1
to a unix socket, so the local Docker daemon can be reached as ``tcp://``.
"""
from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tests.testbed.dockerhosts import ensure_image, run_dockerhost
from tests.testbed.fleet import KIND_LABEL, LABEL, OWNER_LABEL, free_port_block, remove_labelled

SERVER_NAME = "docker-tls.test"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(cwd: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
             "-keyout", f"{name}-key.pem", "-out", f"{name}.pem",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=cwd)


def _signed(cwd: Path, ca: str, name: str, extensions: str) -> None:
    (cwd / f"{name}.ext").write_text(extensions)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}-key.pem",
             "-out", f"{name}.csr", cwd=cwd)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}-key.pem", "-CAcreateserial",
             "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext", cwd=cwd)


@dataclass(frozen=True)
class PKI:
    """Paths of the PEM files :func:`make_pki` wrote."""

    dir: Path

    def path(self, name: str) -> str:
        return str(self.dir / name)

    @property
    def ca(self) -> str:
        return self.path("ca.pem")

    @property
    def cert_dir(self) -> Path:
        """A DOCKER_CERT_PATH folder: ca.pem, cert.pem and key.pem of the good client."""
        return self.dir / "docker-cert-path"


def make_pki(where: Path) -> PKI:
    where.mkdir(parents=True, exist_ok=True)
    _ca(where, "ca")
    _ca(where, "stranger-ca")
    server_ext = (f"subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:{SERVER_NAME}\n"
                  "extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n")
    client_ext = "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
    _signed(where, "ca", "server", server_ext)
    _signed(where, "ca", "client", client_ext)
    _signed(where, "stranger-ca", "stranger", client_ext)
    cert_dir = where / "docker-cert-path"
    cert_dir.mkdir()
    for src, dst in (("ca.pem", "ca.pem"), ("client.pem", "cert.pem"), ("client-key.pem", "key.pem")):
        shutil.copy(where / src, cert_dir / dst)
    return PKI(where)


class TLSDockerd:
    """``dockerd --tlsverify`` on 127.0.0.1:<port>: a test bed Docker host container (tests/testbed/dockerhosts.py)
    whose daemon listens on TCP with the PKI's server certificate. It runs in its own network namespace, so it
    leaves the main daemon's bridge alone (a second dockerd on this machine's own network would not)."""

    def __init__(self, root: Path, pki: PKI) -> None:
        self.root = root
        self.pki = pki
        self.port = free_port_block(1)
        self.name = f"dockerd-tls-{self.port}"
        self.outer = None

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def options(self, **extra) -> dict:
        """The modules' Docker options that reach this daemon with the good client certificate."""
        return {"docker_host": self.url, "validate_certs": True, "ca_path": self.pki.ca,
                "client_cert": self.pki.path("client.pem"), "client_key": self.pki.path("client-key.pem"), **extra}

    def cli(self) -> list[str]:
        return ["docker", "-H", self.url, "--tlsverify", "--tlscacert", self.pki.ca,
                "--tlscert", self.pki.path("client.pem"), "--tlskey", self.pki.path("client-key.pem")]

    def start(self, outer, timeout: float = 90) -> None:
        self.outer = outer
        labels = {LABEL: self.name, KIND_LABEL: "test", OWNER_LABEL: str(os.getpid())}
        args = ("-H tcp://0.0.0.0:2376 --tlsverify --tlscacert /pki/ca.pem --tlscert /pki/server.pem "
                "--tlskey /pki/server-key.pem")
        container = run_dockerhost(outer, ensure_image(outer), self.name, labels, ports={"2376/tcp": self.port},
                                   environment={"DOCKERD_ARGS": args},
                                   volumes={str(self.pki.dir): {"bind": "/pki", "mode": "ro"}})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            container.reload()
            if container.status != "running":
                raise RuntimeError(f"{self.name} stopped: {container.logs()[-2000:]!r}")
            done = subprocess.run([*self.cli(), "version", "--format", "{{.Server.Version}}"],
                                  capture_output=True, text=True, timeout=30, check=False)
            if done.returncode == 0:
                return
            time.sleep(0.5)
        raise TimeoutError(f"dockerd on {self.url} not up after {timeout:.0f}s")

    def load(self, image: str) -> None:
        """Copy ``image`` from the main daemon into this one."""
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        loaded = subprocess.run([*self.cli(), "load", "-q"], stdin=save.stdout, capture_output=True, timeout=600,
                                check=False)
        save.stdout.close()
        if save.wait(timeout=600) != 0 or loaded.returncode != 0:
            raise RuntimeError(f"cannot load {image} into {self.url}: {loaded.stderr!r}")

    def stop(self) -> None:
        if self.outer is not None:
            remove_labelled(self.outer, f"{LABEL}={self.name}")


class Front:
    """Plain TCP on 127.0.0.1:<port>, forwarded to the unix socket ``upstream`` (a Docker daemon reached over TCP)."""

    def __init__(self, upstream: str | int) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def __enter__(self) -> Front:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _addr = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _accept(self, conn: socket.socket) -> socket.socket | None:
        """The client's side of the forward (``None``: the connection was refused and closed)."""
        return conn

    def _connect(self) -> socket.socket:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.settimeout(30)
        upstream.connect(str(self.upstream))
        upstream.settimeout(None)
        return upstream

    def _handle(self, conn: socket.socket) -> None:
        client = self._accept(conn)
        if client is None:
            return
        upstream = self._connect()

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for sock in (src, dst):
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
        back.start()
        pump(client, upstream)
        back.join(timeout=30)
        client.close()
        upstream.close()


class TLSFront(Front):
    """HTTPS on 127.0.0.1:<port> (``cert``/``key``), forwarded as plain TCP to 127.0.0.1:``upstream``."""

    def __init__(self, upstream: int, cert: str, key: str) -> None:
        super().__init__(upstream)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _accept(self, conn: socket.socket) -> socket.socket | None:
        try:
            return self.context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            conn.close()  # the client refused our certificate: that is the point of some tests
            return None

    def _connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.upstream), timeout=30)
