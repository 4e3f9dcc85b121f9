"""The run's credit budget: ``max_credits`` in total and per provider, never exceeded by what it submits.

A job is submitted only when the credits already spent, plus those held by jobs in flight, plus its own
price fit every cap that applies. A job that does not fit while others are in flight waits for them to
settle (a failed job is refunded); one that cannot fit even then is refused with ``BudgetExceeded``.

Unpublished prices (``estimate_credits`` None: Pixii Listing Builder and Scale) are learned from the
first job's reported cost, per ``Provider.price_key``. Until a price is known, such a job is submitted
alone: it holds all the room left under its caps, so nothing else can be submitted past a cap while its
cost is unknown, and at most one job of unknown price is in flight per provider. Only that first job's
own price can overshoot the room it was given, which no client can know in advance.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from providers.errors import PermanentError


class BudgetExceeded(PermanentError):
    """Submitting this job would spend more than the run's ``max_credits``."""


@dataclass
class Hold:
    """Credits set aside for one submitted job until its cost is known."""

    provider: str
    price_key: str
    credits: int
    unknown_price: bool


@dataclass
class Budget:
    """One run's caps, what it has spent and holds, and the prices it learned (module docstring)."""

    max_total: int | None = None
    per_provider: dict[str, int] = field(default_factory=dict)
    spent: dict[str, int] = field(default_factory=dict)
    """Settled credits per provider: charged minus refunded, for jobs this run submitted."""
    learned: dict[tuple[str, str], int] = field(default_factory=dict)
    """(provider, price key) -> the reported cost of a job whose price is unpublished."""
    holds: dict[str, Hold] = field(default_factory=dict)
    refused: int = 0
    _change: asyncio.Event | None = None

    # ---- reading ----

    def applies_to(self, provider: str) -> bool:
        return self.max_total is not None or provider in self.per_provider

    def price(self, provider: str, price_key: str, estimate: int | None) -> int | None:
        return estimate if estimate is not None else self.learned.get((provider, price_key))

    def _caps(self, provider: str) -> list[tuple[str, int, int, int]]:
        """(name, cap, settled, held) of every cap the provider's jobs count against."""
        out = []
        if self.max_total is not None:
            held = sum(h.credits for h in self.holds.values())
            out.append((f"max_credits {self.max_total}", self.max_total, sum(self.spent.values()), held))
        if provider in self.per_provider:
            held = sum(h.credits for h in self.holds.values() if h.provider == provider)
            out.append(
                (
                    f"{provider}'s max {self.per_provider[provider]}",
                    self.per_provider[provider],
                    self.spent.get(provider, 0),
                    held,
                )
            )
        return out

    def _verdict(self, provider: str, price: int | None) -> tuple[str, int]:
        """('fits', credits to hold) | ('wait', 0) | ('never', 0); raises nothing."""
        room = None
        for _, cap, settled, held in self._caps(provider):
            if settled + (price or 0) > cap or (price is None and settled >= cap):
                return "never", 0
            left = cap - settled - held
            room = left if room is None else min(room, left)
        if room is None:
            return "fits", price or 0
        if price is None:
            return ("fits", room) if room > 0 else ("wait", 0)
        return ("fits", price) if price <= room else ("wait", 0)

    def _refusal(self, provider: str, price: int | None) -> BudgetExceeded:
        for name, cap, settled, _ in self._caps(provider):
            if settled + (price or 0) > cap or (price is None and settled >= cap):
                cost = f"this job costs {price}" if price is not None else "this job's price is unpublished"
                return BudgetExceeded(
                    f"budget: not submitted: {settled} of {name} credits spent, {cost}",
                    provider=provider,
                    code="BUDGET",
                )
        return BudgetExceeded("budget: not submitted", provider=provider, code="BUDGET")

    # ---- the job's life: reserve -> submitted -> settle (or release) ----

    async def reserve(self, provider: str, price_key: str, estimate: int | None) -> str | None:
        """Wait until the job fits and hold its price; the hold's id, None when no cap applies."""
        if not self.applies_to(provider):
            return None
        while True:
            price = self.price(provider, price_key, estimate)
            verdict, credits = self._verdict(provider, price)
            if verdict == "fits":
                hold_id = uuid.uuid4().hex  # unique across runs: a resumed job's meta carries an old one
                self.holds[hold_id] = Hold(provider, price_key, credits, unknown_price=price is None)
                return hold_id
            if verdict == "never":
                self.refused += 1
                raise self._refusal(provider, price)
            await self._changed()

    def submitted(self, hold_id: str | None, credits_at_submit: int | None) -> None:
        """The submit response told the charge: hold exactly that (and learn an unpublished price)."""
        hold = self.holds.get(hold_id or "")
        if hold is None or credits_at_submit is None:
            return
        if hold.unknown_price:
            self._learn(hold, credits_at_submit)
        hold.credits = credits_at_submit
        self._notify()

    def settle(self, hold_id: str | None, charged: int | None, refunded: int = 0) -> None:
        """The job finished (or will never be seen again): its cost becomes spent, its hold is freed.
        Without a reported charge a known price counts in full; an unpublished one stays unknown."""
        hold = self.holds.get(hold_id or "")
        if hold is None:
            return
        if charged is None:
            self._free(hold_id, 0 if hold.unknown_price else hold.credits)
            return
        if hold.unknown_price:
            self._learn(hold, charged)
        self._free(hold_id, charged - refunded)

    @contextlib.contextmanager
    def freed_on_error(self, hold_id: str | None) -> Iterator[None]:
        """Around a submit: when it raises, the hold is released, or counted as spent when the
        submission's outcome is unknown (it may have been charged)."""
        try:
            yield
        except BaseException as exc:
            self.release(hold_id, maybe_charged=getattr(exc, "code", None) == "submit_outcome_unknown")
            raise

    def release(self, hold_id: str | None, *, maybe_charged: bool) -> None:
        """The submit failed: nothing was charged, or (``maybe_charged``: the outcome is unknown) it
        may have been, and the credits held then count as spent."""
        hold = self.holds.get(hold_id or "")
        if hold is not None:
            self._free(hold_id, hold.credits if maybe_charged else 0)

    def note(self) -> str | None:
        """One line for the run summary when jobs were refused."""
        if not self.refused:
            return None
        caps = ([f"max_credits {self.max_total}"] if self.max_total is not None else []) + [
            f"{p} max {c}" for p, c in sorted(self.per_provider.items())
        ]
        return (
            f"budget: {self.refused} job(s) not submitted ({', '.join(caps)}; "
            f"{sum(self.spent.values())} credits spent)"
        )

    # ---- helpers ----

    def _free(self, hold_id: str | None, spent: int) -> None:
        hold = self.holds.pop(hold_id or "")
        self.spent[hold.provider] = self.spent.get(hold.provider, 0) + max(0, spent)
        self._notify()

    def _learn(self, hold: Hold, credits: int) -> None:
        key = (hold.provider, hold.price_key)
        self.learned[key] = max(credits, self.learned.get(key, 0))

    def _notify(self) -> None:
        if self._change is not None:
            self._change.set()
            self._change = None

    async def _changed(self) -> None:
        if self._change is None:
            self._change = asyncio.Event()
        await self._change.wait()
