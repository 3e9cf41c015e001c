"""A throwaway PostgreSQL 15 cluster for tests: initdb into a temp dir, start on a free local port."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path(os.environ.get("SISBRIDGE_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_owner(args: list[str]) -> list[str]:
    # initdb refuses to run as root: run the server tools as the postgres OS user then.
    if os.geteuid() == 0:
        return ["runuser", "-u", PG_USER, "--", *args]
    return args


@dataclass
class PgServer:
    """A running cluster; `url(dbname)` gives a SQLAlchemy-style URI for one of its databases."""

    data_dir: Path
    port: int
    log_file: Path

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{dbname}"

    def pg_ctl(self, *args: str) -> subprocess.CompletedProcess:
        command = _as_owner([str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), *args])
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data_dir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=50"
        )
        result = self.pg_ctl("-o", options, "-l", str(self.log_file), "-w", "-t", "60", "start")
        if result.returncode != 0:
            log = self.log_file.read_text() if self.log_file.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {result.stdout}{result.stderr}\n{log}")

    def stop(self) -> None:
        self.pg_ctl("-m", "fast", "-w", "stop")


def start_server() -> PgServer:
    """initdb a new cluster in a temp dir and start it; raises RuntimeError when that fails."""
    initdb = PG_BIN / "initdb"
    if not initdb.exists():
        raise RuntimeError(f"PostgreSQL 15 server binaries not found in {PG_BIN}")
    base = Path(tempfile.mkdtemp(prefix="sisbridge-pg-"))
    if os.geteuid() == 0:
        owner = pwd.getpwnam(PG_USER)
        os.chown(base, owner.pw_uid, owner.pw_gid)
    base.chmod(0o700)
    data_dir = base / "data"
    command = _as_owner(
        [str(initdb), "-D", str(data_dir), "-U", PG_USER, "--auth=trust", "-E", "UTF8", "--locale=C"]
    )
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"initdb failed: {result.stdout}{result.stderr}")
    server = PgServer(data_dir=data_dir, port=_free_port(), log_file=base / "server.log")
    server.start()
    return server


def remove_server(server: PgServer) -> None:
    server.stop()
    shutil.rmtree(server.data_dir.parent, ignore_errors=True)
