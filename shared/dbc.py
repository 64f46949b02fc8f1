"""DBC files shipped inside a package, parsed strictly once (cantools)."""

from __future__ import annotations

from functools import cache
from importlib import resources

import cantools
from cantools.database.can import Database


@cache
def packaged_dbc(package: str, name: str) -> Database:
    """`<package>/dbc/<name>.dbc`; TypeError when it is not a CAN database."""
    text = resources.files(package).joinpath("dbc", f"{name}.dbc").read_text("utf-8")
    db = cantools.database.load_string(text, database_format="dbc", strict=True)
    if not isinstance(db, Database):  # load_string may also return a diagnostics database
        raise TypeError(f"{name}.dbc is not a CAN database")
    return db
