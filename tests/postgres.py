"""A real, throwaway PostgreSQL server for the tests (Debian's `postgresql` package, which
scripts/setup.sh installs): initdb + pg_ctl in a temporary folder, listening on loopback
only, trust authentication, stopped at the end of the session.

PostgreSQL refuses to run as root, which the tests are here and in CI: the server then
runs as `nobody` (setpriv), in a folder it owns.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def _tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


class PostgresServer:
    def __init__(self, folder: Path, port: int):
        self.folder = folder
        self.data = folder / "data"
        self.port = port
        self.initdb = _tool("initdb")
        self.pg_ctl = _tool("pg_ctl")
        if self.initdb is None or self.pg_ctl is None:
            pytest.skip("PostgreSQL is not installed (apt-get install -y postgresql)")
        self._as: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(folder, "nobody", "nogroup")
            self._as = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
        self._counter = 0

    def _run(self, *command: str) -> None:
        subprocess.run(
            [*self._as, *command], check=True, capture_output=True, cwd=self.folder, timeout=120
        )

    def start(self) -> None:
        self._run(
            self.initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "--no-sync", "-E", "UTF8", "--locale=C",
        )  # fmt: skip
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c fsync=off "
            f"-c synchronous_commit=off -c full_page_writes=off "
            f"-c unix_socket_directories={self.folder} -c max_connections=200"
        )
        self._run(
            self.pg_ctl, "-D", str(self.data), "-l", str(self.folder / "server.log"),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self) -> None:
        subprocess.run(
            [*self._as, self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"],
            check=False,
            capture_output=True,
            timeout=60,
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self, prefix: str = "arc") -> str:
        """A fresh, empty database's URL."""
        import psycopg

        self._counter += 1
        name = f"{prefix}_{os.getpid()}_{self._counter}_{int(time.time() * 1000) % 10**6}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def start_postgres(port: int) -> PostgresServer:
    folder = Path(tempfile.mkdtemp(prefix="arc-pg-"))
    server = PostgresServer(folder, port)
    try:
        server.start()
    except subprocess.CalledProcessError as e:
        log = folder / "server.log"
        detail = log.read_text()[-2000:] if log.exists() else ""
        raise RuntimeError(f"PostgreSQL did not start: {e.stderr!r} {detail}") from None
    return server


def remove(server: PostgresServer) -> None:
    server.stop()
    shutil.rmtree(server.folder, ignore_errors=True)
