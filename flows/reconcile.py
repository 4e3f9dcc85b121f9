"""Deciding what happened to an ambiguous paid submission, from the provider's balance.

A submit that fails after the request may have reached the provider (a 5xx, a read timeout, a dropped
connection, a malformed body) may have been processed and billed: no contract has an idempotency key.
Where the provider has a balance, the run can tell. It pauses that provider's submissions, lets the
submissions already on the wire answer, reads the balance and compares it with what it expected from
the last balance it knew and every debit and refund it has seen since:

* no unexplained debit, and no job of this provider that could have been refunded unseen: the request
  was not processed, and may be sent again;
* an unexplained debit of exactly the ambiguous requests' price: they were charged (the outputs are
  *charged, not retrievable*: never resent automatically);
* anything else (another run or worker submitting at the same time, a refund not yet seen, an
  unpublished price): *outcome unknown*, held for a person.

Several ambiguous submissions pending at once are decided together (their prices add up). Each check
takes the balance it read as the new baseline, so whatever it could not explain does not spill over
into the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum

from .costs import BalanceCheck, CostSummary

logger = logging.getLogger("listingflow.reconcile")


class Verdict(StrEnum):
    NOT_CHARGED = "not_charged"
    CHARGED = "charged"
    UNKNOWN = "unknown"


@dataclass
class _Pending:
    price: int | None
    verdict: asyncio.Future[Verdict]


@dataclass
class BalanceGate:
    """One provider's paid submissions in this run, and what its balance should be.

    ``read_balance`` is the provider's balance endpoint (None when it has none: every ambiguous
    submission of such a provider is unknown unless the plugin resolved it by a lookup)."""

    provider: str
    read_balance: Callable[[], Awaitable[int | None]] | None
    settle_seconds: float = 0.0
    """How long after the answers a request that timed out may still be debited (a gateway's 5xx, a
    read timeout or a dropped connection can leave the provider processing it)."""
    start_balance: int | None = None
    baseline: int | None = None
    debits: int = 0
    refunds: int = 0
    unsettled_jobs: int = 0
    stated_end: int | None = None
    """The lowest balance the provider's answers stated after this run's debits (the end balance
    when they tell the whole story: ``end_is_stated``); None before any answer stated one."""
    _debited: int = 0
    _statements_tell_all: bool = True
    _sending: int = 0
    _open: asyncio.Event = field(default_factory=asyncio.Event)
    _drained: asyncio.Event = field(default_factory=asyncio.Event)
    _pending: list[_Pending] = field(default_factory=list)
    _checking: asyncio.Task[None] | None = None
    _started: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self._open.set()
        self._drained.set()

    async def start(self) -> None:
        """Read the balance once, before this run's first paid submission to the provider."""
        async with self._started:
            if self.start_balance is None and self.read_balance is not None and self.baseline is None:
                self.start_balance = self.baseline = await _read(self.read_balance)

    @contextlib.asynccontextmanager
    async def sending(self) -> AsyncIterator[Ticket]:
        """One paid submission, from its first request to its answer. It counts as *on the wire* from
        the moment its request gets its rate-limit turn (``Ticket.on_wire``), not while it queues:
        a balance check waits only for requests that may already have reached the provider."""
        await self.start()
        ticket = Ticket(self)
        try:
            yield ticket
        finally:
            ticket.off_wire()

    async def _enter(self) -> None:
        while not self._open.is_set():
            await self._open.wait()
        self._sending += 1
        self._drained.clear()

    def _leave(self) -> None:
        self._sending -= 1
        if self._sending == 0:
            self._drained.set()

    def charged(self, credits: int | None, stated_balance: int | None = None) -> None:
        """A submission answered: its debit, the balance its answer stated (if any), and one more job
        that could still be refunded."""
        if credits is None:
            self.baseline = None  # an unknown debit: the balance can no longer tell anything this run
            self._statements_tell_all = False
        else:
            self.debits += credits
            self._debited += credits
        if stated_balance is None:
            self._statements_tell_all = False
        else:  # answers may arrive out of order; with debits only, the lowest is the latest
            self.stated_end = (
                stated_balance if self.stated_end is None else min(stated_balance, self.stated_end)
            )
        self.unsettled_jobs += 1

    def watching(self) -> None:
        """A job of an earlier run is being waited on: it too may be refunded while we look."""
        self.unsettled_jobs += 1
        self._statements_tell_all = False

    def settled(self, refunded: int) -> None:
        """A job's final result was seen, with what it refunded."""
        self.refunds += refunded
        if refunded:
            self._statements_tell_all = False
        self.unsettled_jobs = max(0, self.unsettled_jobs - 1)

    async def decide(self, price: int | None) -> Verdict:
        """What happened to an ambiguous submission costing ``price``."""
        self._statements_tell_all = False
        if self.read_balance is None:
            return Verdict.UNKNOWN
        pending = _Pending(price, asyncio.get_running_loop().create_future())
        self._pending.append(pending)
        self._open.clear()
        if self._checking is None or self._checking.done():
            self._checking = asyncio.create_task(self._check())
        return await asyncio.shield(pending.verdict)

    async def _check(self) -> None:
        try:
            await self._drained.wait()  # the submissions already on the wire have answered
            await asyncio.sleep(self.settle_seconds)  # and the ambiguous ones have had time to be debited
            batch, self._pending = self._pending, []
            verdict = await self._verdict([p.price for p in batch])
            for p in batch:
                p.verdict.set_result(verdict)
        except BaseException as exc:  # a failed check leaves every waiter unknown
            for p in [*self._pending]:
                if not p.verdict.done():
                    p.verdict.set_result(Verdict.UNKNOWN)
            self._pending.clear()
            if not isinstance(exc, Exception):
                raise
        finally:
            if self._pending:
                self._checking = asyncio.create_task(self._check())
            else:
                self._open.set()

    async def _verdict(self, prices: list[int | None]) -> Verdict:
        if self.read_balance is None or self.baseline is None:
            return Verdict.UNKNOWN
        expected = self.baseline - self.debits + self.refunds
        balance = await _read(self.read_balance)
        self.baseline, self.debits, self.refunds = balance, 0, 0
        if balance is None:
            return Verdict.UNKNOWN
        unexplained = expected - balance
        logger.info(
            "%s balance %s, expected %s: unexplained debit %s for %d ambiguous submission(s) of %s",
            self.provider,
            balance,
            expected,
            unexplained,
            len(prices),
            prices,
        )
        if unexplained == 0 and self.unsettled_jobs == 0:
            return Verdict.NOT_CHARGED
        if None not in prices and unexplained == sum(p for p in prices if p is not None) and unexplained > 0:
            return Verdict.CHARGED
        return Verdict.UNKNOWN

    @property
    def end_is_stated(self) -> bool:
        """Whether the provider's own answers already told the end balance: every submission of the
        run answered with the balance after it, the lowest of them is the start balance less every
        debit (nobody else spent meanwhile), and every job has settled without a refund, no
        submission was ambiguous and no earlier run's job was waited on (nothing can have moved the
        balance since). Reading it again would cost a request that counts against the rate limit and
        could only show another user's spending."""
        return (
            self._statements_tell_all
            and self.unsettled_jobs == 0
            and self.start_balance is not None
            and self.stated_end is not None
            and self.stated_end == self.start_balance - self._debited
        )

    async def end_balance(self, timeout: float | None = None) -> int | None:
        """The balance at the end of the run (for the cost summary); None when it has none, or when it
        could not be read within ``timeout`` s."""
        if self.end_is_stated:
            return self.stated_end
        return await _read(self.read_balance, timeout) if self.read_balance is not None else None


class Ticket:
    """One submission's place on the wire (see ``BalanceGate.sending``)."""

    def __init__(self, gate: BalanceGate) -> None:
        self.gate = gate
        self.entered = False
        self.before_first_send: Callable[[], Awaitable[None]] | None = None  # e.g. write its intent

    async def on_wire(self) -> None:
        """Its request is about to be sent: wait out a balance check under way, then count it."""
        if not self.entered:
            await self.gate._enter()
            self.entered = True
            first, self.before_first_send = self.before_first_send, None
            if first is not None:
                await first()

    def off_wire(self) -> None:
        if self.entered:
            self.entered = False
            self.gate._leave()


async def _read(
    read_balance: Callable[[], Awaitable[int | None]], timeout: float | None = None
) -> int | None:
    try:
        return await asyncio.wait_for(read_balance(), timeout)
    except Exception as exc:  # noqa: BLE001 - a balance we cannot read decides nothing
        logger.warning("balance could not be read: %s", str(exc) or type(exc).__name__)
        return None


async def balance_checks(
    gates: dict[str, BalanceGate], summary: CostSummary, timeout: float | None = None
) -> list[BalanceCheck]:
    """Each provider's balance at the start and the end of the run, against the summary's lines; an end
    balance not read within ``timeout`` s is reported as not readable."""
    lines = {line.provider: line for line in summary.by("provider")}
    read = sorted(
        (n, g) for n, g in gates.items() if g.read_balance is not None and g.start_balance is not None
    )
    # every provider at once: this is on the way to the run's end
    ends = await asyncio.gather(*(gate.end_balance(timeout) for _, gate in read))
    return [
        BalanceCheck(
            provider=name,
            start=gate.start_balance,
            end=end,
            end_stated=gate.end_is_stated,
            net=line.net if (line := lines.get(name)) else 0,
            possibly_charged=line.possibly_charged if line else 0,
        )
        for (name, gate), end in zip(read, ends, strict=True)
    ]
