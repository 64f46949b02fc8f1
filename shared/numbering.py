"""Numbers for people, indices for the contract.

People count modules, cells and temperature sensors from 1: "M2 · C3" is the third cell of the
second module, and `inject open_wire --module 2 --channel 3` hits that cell. The web
application, the fault-injection commands, event texts, the CSV exports and the docs all count
from 1. The message contract (`shared.messages`, every MQTT payload, an event's `values`) keeps
0-based indices, as do the Modbus register map's and the CAN frames' multiplexer indices (see
their generated docs). The conversion happens at the edge where a person types or reads the
number, with the functions here.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def index_of(number: int, what: str, count: int, source: str = "") -> int:
    """The 0-based index of a person's 1-based `number` among `count` of `what`; a ValueError
    naming the valid range (and `source`, where the count comes from) for 0, a negative
    number or one past `count`."""
    if not 1 <= number <= count:
        where = f" in {source}" if source else ""
        raise ValueError(
            f"{what} numbers run from 1 to {count}{where} (1 = the first), not {number}"
        )
    return number - 1


def number_of(index: int) -> int:
    """The 1-based number people read for a 0-based contract index."""
    return index + 1


def whole_number(what: str) -> Callable[[str], int]:
    """An argparse `type`: the text as a whole number, or a message naming `what` (argparse
    prints it and exits with status 2, no traceback)."""

    def parse(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{what} numbers are whole numbers counted from 1, not {text!r}"
            ) from None

    return parse
