"""A throw-away PostgreSQL server for the test suite (the Debian `postgresql` packages).

`initdb` makes a cluster in a temporary folder, `pg_ctl` starts it on a free port (and a Unix
socket in that folder), and `stop()` shuts it down and removes the folder. The server refuses to
run as root, so under root every server command runs as the `postgres` user (`runuser`).

Connections use password authentication over TCP, so the suite exercises URLs that carry a
password (and checks that it never shows).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PostgresServer", "find_pg_bin", "start_server"]

USER = "xmodal"
PASSWORD = "pw-Secr3t-9f2"  # distinctive, so a leak is easy to find in output


def find_pg_bin() -> Path | None:
    """The newest PostgreSQL `bin` folder with initdb and pg_ctl, or None."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
    )
    for folder in reversed(candidates):
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).parent
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    bin_dir: Path
    root: Path  # temporary folder: data/ and the socket
    port: int
    as_user: str | None  # run server commands as this user (when we are root)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL (psycopg 3 driver) of one database on this server."""
        return f"postgresql+psycopg://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if self.as_user:
            cmd = ["runuser", "-u", self.as_user, "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=120)

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=USER, password=PASSWORD, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "immediate", "-w", check=False)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _memory_folder() -> str | None:
    """/dev/shm when it has room: the suite makes a database per test (12 MB each, ~300 files), and
    removing a couple of GB of them from disk at the end took minutes on a loaded VM."""
    try:
        return "/dev/shm" if shutil.disk_usage("/dev/shm").free > 4 << 30 else None
    except OSError:
        return None


def start_server(durable: bool = False) -> PostgresServer:
    """Start a fresh cluster; raises RuntimeError when PostgreSQL is not installed or fails to start.

    durable: fsync and synchronous commits on, as a real server (benchmarks); off for the tests."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install -y postgresql)")
    as_user = "postgres" if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="xmodal-pg-", dir=None if durable else _memory_folder()))
    server = PostgresServer(bin_dir, root, _free_port(), as_user)
    try:
        pwfile = root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if as_user:
            shutil.chown(root, user=as_user)
            shutil.chown(pwfile, user=as_user)
        os.chmod(root, 0o700)
        server._run(
            "initdb",
            "-D",
            str(server.data_dir),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )
        # a test server: durability off (the suite kills clients, never the server), small footprint
        options = f"-p {server.port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=100"
        if not durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=32MB"
        result = server._run(
            "pg_ctl",
            "start",
            "-D",
            str(server.data_dir),
            "-w",
            "-t",
            "60",
            "-l",
            str(root / "server.log"),
            "-o",
            options,
            check=False,
        )
        if result.returncode != 0:
            log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {result.stderr.strip()} {log[-2000:]}")
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return server
