"""The balance gate's end balance: read again unless the provider's own answers already told it."""

from __future__ import annotations

import asyncio
import time

from flows.reconcile import BalanceGate


def gate(balance: int = 100) -> tuple[BalanceGate, list[int]]:
    reads: list[int] = []

    async def read() -> int:
        reads.append(balance)
        return balance

    return BalanceGate("prodvisual", read), reads


async def test_the_answers_stated_balance_is_the_end_when_they_tell_the_whole_story() -> None:
    g, reads = gate(100)
    await g.start()
    g.charged(3, stated_balance=95)  # answers out of order: the lowest is the latest
    g.charged(2, stated_balance=97)
    g.settled(0)
    g.settled(0)
    assert await g.end_balance() == 95
    assert reads == [100] and g.end_is_stated


async def test_a_balance_spent_to_zero_is_stated_too() -> None:
    g, reads = gate(15)
    await g.start()
    g.charged(5, stated_balance=0)  # the later debit's answer arrives first
    g.charged(10, stated_balance=5)
    g.settled(0)
    g.settled(0)
    assert await g.end_balance() == 0 and reads == [15]


async def test_the_balance_is_read_again_whenever_the_answers_cannot_tell() -> None:
    def charged_and_settled(g: BalanceGate, *, stated: int | None, refunded: int = 0) -> None:
        g.charged(5, stated_balance=stated)
        g.settled(refunded)

    cases = {
        "an answer without a balance": lambda g: charged_and_settled(g, stated=None),
        "a refund after the answers": lambda g: charged_and_settled(g, stated=95, refunded=1),
        "a job not yet settled": lambda g: g.charged(5, stated_balance=95),
        "somebody else spent meanwhile": lambda g: charged_and_settled(g, stated=90),
        "an earlier run's job waited on": lambda g: (charged_and_settled(g, stated=95), g.watching()),
        "nothing submitted": lambda g: None,
    }
    for why, happen in cases.items():
        g, reads = gate(100)
        await g.start()
        happen(g)
        assert await g.end_balance() == 100, why  # what the balance endpoint says
        assert reads == [100, 100] and not g.end_is_stated, why


async def test_an_ambiguous_submission_makes_the_end_balance_read_again() -> None:
    g, reads = gate(100)
    await g.start()
    g.charged(5, stated_balance=95)
    g.settled(0)
    await g.decide(5)  # reads the balance to decide
    assert await g.end_balance() == 100
    assert len(reads) == 3 and not g.end_is_stated


async def test_an_end_balance_not_read_in_time_is_not_readable_rather_than_a_wait() -> None:
    """A stopped run reads its end balances with a time limit: one waiting a rate-limit window must not
    hold the exit."""
    read_started = asyncio.Event()

    async def read_after_a_window() -> int:
        read_started.set()
        await asyncio.sleep(60)
        return 100

    g = BalanceGate("prodvisual", read_after_a_window)
    g.start_balance = 100
    took = time.monotonic()
    assert await g.end_balance(timeout=0.05) is None
    assert read_started.is_set() and time.monotonic() - took < 5
