"""DuckDB's extensions, loaded from the signed binaries that their wheels install.

DuckDB publishes its extensions as wheels (`duckdb-extension-<name>`), pinned with DuckDB itself in
requirements.txt. Loading them from the installed package works offline and never writes to `~`;
DuckDB checks each binary's signature at `LOAD`, so unsigned extensions stay refused.
"""

from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path

import duckdb

# The extensions the project uses, by DuckDB's name, with the Python package that carries each one.
PACKAGES = {
    "ducklake": "duckdb_extension_ducklake",
    "postgres_scanner": "duckdb_extension_postgres_scanner",
    "httpfs": "duckdb_extension_httpfs",
    "sqlite_scanner": "duckdb_extension_sqlite_scanner",
}


class ExtensionMissing(RuntimeError):
    """An extension's wheel is not installed, or was built for another DuckDB version."""


@cache
def extension_path(name: str) -> Path:
    """The signed binary of extension `name` for the installed DuckDB version."""
    if name not in PACKAGES:
        raise ExtensionMissing(f"unknown DuckDB extension {name!r}; known: {', '.join(sorted(PACKAGES))}")
    try:
        package = importlib.import_module(PACKAGES[name])
    except ImportError as exc:
        raise ExtensionMissing(
            f"DuckDB extension {name!r} needs the package {PACKAGES[name].replace('_', '-')} "
            "(pip install -r requirements.txt)"
        ) from exc
    version = duckdb.__version__
    path = Path(package.__file__).parent / "extensions" / f"v{version}" / f"{name}.duckdb_extension"
    if not path.is_file():
        raise ExtensionMissing(
            f"{PACKAGES[name]} has no build of {name!r} for DuckDB {version} ({path} is missing); "
            "install the versions pinned in requirements.txt"
        )
    return path


def load(con: duckdb.DuckDBPyConnection, *names: str) -> None:
    """LOAD each extension into `con` from its wheel (a no-op for one already loaded)."""
    for name in names:
        con.execute(f"load '{extension_path(name)}'")


def connect(database: str = ":memory:", *names: str, **kwargs) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that never downloads an extension, with `names` loaded from their wheels."""
    config = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    config.update(kwargs.pop("config", {}))
    con = duckdb.connect(database, config=config, **kwargs)
    try:
        load(con, *names)
    except BaseException:
        con.close()
        raise
    return con
