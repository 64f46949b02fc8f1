"""Contactor coils and auxiliary feedback contacts through a Modbus digital I/O module.

`ContactorIo` is what the master needs from any contactor output stage:

* `write(coils)` commands the three coils (main positive, main negative, precharge relay);
* `read(now_s)` returns the auxiliary contacts as a `ContactorIoFeedback`: each contact
  True (closed), False (open) or None (unknown), whether the sample is stale, and the errors
  since the last read.

`ModbusContactorIo` implements it with pymodbus for a generic relay module (RTU or TCP) whose
addresses come from `ContactorIoConfig` (`contactors.io` in the system configuration).

Rules:

* a failed, refused (Modbus exception) or timed-out transaction never raises: it becomes an
  error string naming the operation and the reason, and a count in `error_counts`;
* a feedback sample is fresh for `poll_period_s + timeout_s` after the read that produced it;
  past that every contact is None and `stale` is True, never the last value;
* every coil write is verified by reading the coils back; a difference is an error.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Final, Protocol

from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from services.master_core.contactors import CONTACTORS, ContactorFeedback, ContactorName
from shared.config import ContactorIoConfig

__all__ = [
    "CoilCommands",
    "ContactorIo",
    "ContactorIoFeedback",
    "ModbusContactorIo",
    "RelayAddresses",
    "Span",
    "bits_at",
    "fresh_feedback",
    "span_of",
]

ERROR_KINDS: Final = ("timeout", "exception", "connection", "readback", "short_reply")
"""Keys of `error_counts`: no reply, a Modbus exception response, link down or a failed
request, coils read back different from the command, fewer bits than asked for."""


class CoilCommands(Protocol):
    """Anything that says which coils are on (`ContactorOutputs` is one)."""

    def commanded(self, name: ContactorName) -> bool: ...


@dataclass(frozen=True, slots=True)
class ContactorIoFeedback:
    """The auxiliary contacts as read: True = closed, None = unknown (stale or never read)."""

    main_positive: bool | None = None
    main_negative: bool | None = None
    precharge: bool | None = None
    stale: bool = True
    errors: tuple[str, ...] = ()
    """What went wrong since the previous `read`, one line each."""

    def contact(self, name: ContactorName) -> bool | None:
        value: bool | None = getattr(self, name)
        return value

    def to_feedback(self) -> ContactorFeedback | None:
        """The state machine's feedback, or None when any contact is unknown."""
        values = [self.contact(name) for name in CONTACTORS]
        if self.stale or any(v is None for v in values):
            return None
        return ContactorFeedback(*(bool(v) for v in values))


class ContactorIo(Protocol):
    """A contactor output stage with auxiliary feedback contacts."""

    def write(self, coils: CoilCommands) -> None: ...

    def read(self, now_s: float) -> ContactorIoFeedback: ...

    def close(self) -> None: ...


# --- pure parts ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Span:
    """One contiguous block of bits: `count` bits from `address`."""

    address: int
    count: int


@dataclass(frozen=True, slots=True)
class RelayAddresses:
    """Coil and discrete-input address of each contactor."""

    coils: dict[ContactorName, int] = field(default_factory=dict)
    inputs: dict[ContactorName, int] = field(default_factory=dict)

    @classmethod
    def from_config(cls, io: ContactorIoConfig) -> RelayAddresses:
        return cls(
            coils={
                "main_positive": io.coil_main_positive,
                "main_negative": io.coil_main_negative,
                "precharge": io.coil_precharge,
            },
            inputs={
                "main_positive": io.input_main_positive,
                "main_negative": io.input_main_negative,
                "precharge": io.input_precharge,
            },
        )


def span_of(addresses: Sequence[int]) -> Span:
    """The smallest block holding every address (one request reads them all)."""
    low = min(addresses)
    return Span(low, max(addresses) - low + 1)


def bits_at(
    span: Span, bits: Sequence[bool], addresses: dict[ContactorName, int]
) -> dict[ContactorName, bool]:
    """Pick each contactor's bit out of a block read at `span` (ValueError when too short)."""
    if len(bits) < span.count:
        raise ValueError(f"{len(bits)} bits returned for {span.count} asked")
    return {name: bool(bits[address - span.address]) for name, address in addresses.items()}


def fresh_feedback(
    contacts: dict[ContactorName, bool] | None,
    sampled_at_s: float | None,
    now_s: float,
    max_age_s: float,
    errors: tuple[str, ...],
) -> ContactorIoFeedback:
    """The feedback at `now_s`: the sample if it is at most `max_age_s` old, else stale Nones.

    A sample from the future (clock stepped back) is not trusted either.
    """
    if contacts is None or sampled_at_s is None or not 0.0 <= now_s - sampled_at_s <= max_age_s:
        return ContactorIoFeedback(errors=errors)
    return ContactorIoFeedback(
        main_positive=contacts["main_positive"],
        main_negative=contacts["main_negative"],
        precharge=contacts["precharge"],
        stale=False,
        errors=errors,
    )


def exception_name(code: int) -> str:
    try:
        return ExcCodes(code).name
    except ValueError:
        return f"unknown exception {code:#04x}"


class TransactionError(Exception):
    """One failed Modbus transaction: `kind` is one of `ERROR_KINDS`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# --- the Modbus driver ---------------------------------------------------------------------


class ModbusContactorIo:
    """`ContactorIo` over a Modbus relay module; the link opens on first use and reopens."""

    def __init__(self, io: ContactorIoConfig) -> None:
        self._io = io
        self._unit = io.unit_id
        self._addresses = RelayAddresses.from_config(io)
        self._coil_span = span_of(list(self._addresses.coils.values()))
        self._input_span = span_of(list(self._addresses.inputs.values()))
        self._max_age_s = io.poll_period_s + io.timeout_s
        self._client: ModbusTcpClient | ModbusSerialClient
        if io.transport == "tcp":
            self._where = f"relay module {io.host}:{io.tcp_port} unit {io.unit_id}"
            self._client = ModbusTcpClient(
                io.host, port=io.tcp_port, timeout=io.timeout_s, retries=0, name="contactor-io"
            )
        else:
            self._where = f"relay module {io.serial_port} unit {io.unit_id}"
            self._client = ModbusSerialClient(
                io.serial_port,
                framer=FramerType.RTU,
                baudrate=io.baudrate,
                parity=io.parity,
                timeout=io.timeout_s,
                retries=0,
                name="contactor-io",
            )
        self._lock = threading.Lock()
        self._errors: list[str] = []
        self.error_counts: dict[str, int] = dict.fromkeys(ERROR_KINDS, 0)
        """Failed transactions by kind since start."""
        self._contacts: dict[ContactorName, bool] | None = None
        self._sampled_at_s: float | None = None
        self._polled_at_s: float | None = None

    def write(self, coils: CoilCommands) -> None:
        """Set each coil, then read the coils back; failures become errors of the next read.

        Coils going off are written first, and a failed write does not stop the others: a
        module that misses one request must still get every other coil dropped (found by the
        fault matrix: a silent module kept main negative on after a trip)."""
        wanted = {name: bool(coils.commanded(name)) for name in CONTACTORS}
        order = sorted(CONTACTORS, key=lambda name: wanted[name])  # off before on
        with self._lock:
            failed: TransactionError | None = None
            for name in order:
                address = self._addresses.coils[name]
                try:
                    self._transact(
                        f"write coil {address} ({name})",
                        partial(
                            self._client.write_coil, address, wanted[name], device_id=self._unit
                        ),
                    )
                except TransactionError as exc:
                    failed = failed or exc
                    if wanted[name]:
                        break  # never energise a coil after a failed write
            if failed is not None:
                self._record(failed)
                return
            try:
                actual = self._read_bits("read back coils", self._coil_span, coils=True)
            except TransactionError as exc:
                self._record(exc)
                return
            got = bits_at(self._coil_span, actual, self._addresses.coils)
            wrong = [
                f"{n} reads {got[n]}, commanded {wanted[n]}"
                for n in CONTACTORS
                if got[n] != wanted[n]
            ]
            if wrong:
                self._record(
                    TransactionError(
                        "readback", f"{self._where}: coils read back wrong: {', '.join(wrong)}"
                    )
                )

    def read(self, now_s: float) -> ContactorIoFeedback:
        """Poll the inputs when a poll is due, then report the sample while it is fresh."""
        with self._lock:
            due = self._polled_at_s is None or not (
                0.0 <= now_s - self._polled_at_s < self._io.poll_period_s
            )
            if due:
                self._polled_at_s = now_s
                try:
                    bits = self._read_bits("read inputs", self._input_span, coils=False)
                except TransactionError as exc:
                    self._record(exc)
                    self._contacts = None
                else:
                    self._contacts = bits_at(self._input_span, bits, self._addresses.inputs)
                    self._sampled_at_s = now_s
            errors, self._errors = tuple(self._errors), []
            return fresh_feedback(
                self._contacts, self._sampled_at_s, now_s, self._max_age_s, errors
            )

    def close(self) -> None:
        with self._lock:
            self._client.close()  # type: ignore[no-untyped-call]

    # --- bus access -------------------------------------------------------------------------

    def _record(self, exc: TransactionError) -> None:
        self.error_counts[exc.kind] += 1
        self._errors.append(str(exc))

    def _read_bits(self, what: str, span: Span, *, coils: bool) -> list[bool]:
        call = self._client.read_coils if coils else self._client.read_discrete_inputs
        table = "coils" if coils else "discrete inputs"
        where = f"{what} ({table} {span.address}, count {span.count})"
        response = self._transact(
            where, lambda: call(span.address, count=span.count, device_id=self._unit)
        )
        if len(response.bits) < span.count:
            raise TransactionError(
                "short_reply",
                f"{self._where}: {where}: {len(response.bits)} bits returned",
            )
        return [bool(b) for b in response.bits[: span.count]]

    def _transact(self, what: str, request: Callable[[], ModbusPDU]) -> ModbusPDU:
        prefix = f"{self._where}: {what}"
        try:
            response = request()
        except ConnectionException as exc:
            self._client.close()  # type: ignore[no-untyped-call]
            raise TransactionError("connection", f"{prefix}: link unavailable ({exc})") from exc
        except ModbusIOException as exc:
            raise TransactionError(
                "timeout", f"{prefix}: no valid reply within {self._io.timeout_s:g} s"
            ) from exc
        except (ModbusException, OSError) as exc:
            self._client.close()  # type: ignore[no-untyped-call]
            raise TransactionError("connection", f"{prefix}: request failed ({exc})") from exc
        if response.isError():
            code = response.exception_code
            raise TransactionError(
                "exception",
                f"{prefix}: the module answered Modbus exception {code:#04x} "
                f"({exception_name(code)})",
            )
        return response
