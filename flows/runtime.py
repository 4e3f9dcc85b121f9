"""What one flow run shares between its tasks: provider instances, limiters, archive, ledger, budget.

Tasks take only serializable, hashable arguments (names, request models, job references); they find
the live objects of their run (HTTP clients, limiters) through a context variable, so the cache key of
a task never depends on a client object and a task run never carries a credential.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel

from flows.settings import Settings
from providers.contract import PLUGIN_API_VERSION, Provider, Step
from providers.errors import PermanentError, QuotaExhausted

from .archive import SpooledArchive
from .budget import Budget, BudgetExceeded  # noqa: F401 - the run's budget, importable from here
from .costs import CostLedger
from .held import HeldStore
from .intents import Intents, NoIntents
from .limits import ProviderLimiter
from .observer import RunObserver
from .params import RunParameters
from .reconcile import BalanceGate, Ticket
from .stopping import RunStop


class ProviderBlocked(PermanentError):
    """The provider stopped accepting work in this run (insufficient credits)."""


class Deferred(QuotaExhausted):
    """The provider's daily cap was reached earlier in this run; the next run picks this up."""


@dataclass
class RunContext:
    run_id: str
    settings: Settings
    params: RunParameters
    providers: dict[str, Provider]
    limiters: dict[str, ProviderLimiter]
    download_http: httpx.AsyncClient
    archive: SpooledArchive
    budget: Budget
    costs: CostLedger = field(default_factory=CostLedger)
    blocked: dict[str, ProviderBlocked | Deferred] = field(default_factory=dict)
    observer: RunObserver = field(default_factory=RunObserver)
    batchers: dict[tuple[str, str, bool], Any] = field(default_factory=dict)
    gates: dict[str, BalanceGate] = field(default_factory=dict)
    held: HeldStore = field(default_factory=lambda: HeldStore(Path(".listingflow/held")))
    stop: RunStop = field(default_factory=RunStop)
    intents: Intents = field(default_factory=NoIntents)
    products_unstarted: int = 0
    """Products of the run not taken up yet (``run_product`` counts one as taken once the batches it
    will join expect it): a batch waits for them (``Batcher``), as each may still bring members."""
    start_balances: dict[str, int] = field(default_factory=dict)
    """Balances read by pre-flight's access checks: each provider's balance gate starts from them."""
    on_first_submission: Callable[[], None] = lambda: None
    """Called as a job is about to be submitted (not found done): the run then takes its first slots
    ahead (``flows.run._prime``); a rerun that finds everything done takes none."""

    def provider(self, name: str) -> Provider:
        return self.providers[name]

    def gate(self, name: str) -> BalanceGate:
        """The provider's paid submissions in this run and its expected balance (``flows.reconcile``)."""
        if name not in self.gates:
            plugin = self.providers[name]
            start = self.start_balances.get(name) if plugin.balance_endpoint else None
            self.gates[name] = BalanceGate(
                name,
                plugin.balance if plugin.balance_endpoint else None,
                settle_seconds=plugin.settings.settle_seconds,
                start_balance=start,
                baseline=start,
            )
        return self.gates[name]

    def secrets(self) -> list[str]:
        return [s for p in self.providers.values() for s in p.settings.secret_values()]


_current: contextvars.ContextVar[RunContext] = contextvars.ContextVar("listingflow_run")


def current_run() -> RunContext:
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError("no listingflow run is active in this context") from None


def active_run() -> RunContext | None:
    """The run of the current context, if any (code shared with the CLI's estimate runs outside one)."""
    return _current.get(None)


@dataclass
class _Submission:
    provider: str
    ticket: Ticket | None = None  # its place on the wire, for a balance check (flows.reconcile)
    sent: bool = False


_submitting: contextvars.ContextVar[_Submission | None] = contextvars.ContextVar(
    "listingflow_submitting", default=None
)
_past_the_stop: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "listingflow_past_the_stop", default=False
)


@contextlib.contextmanager
def past_the_stop() -> Iterator[None]:
    """Let the current context's requests through a stop: reads that spend nothing and that the run's
    record needs (its end balances), made after its products were wound down."""
    token = _past_the_stop.set(True)
    try:
        yield
    finally:
        _past_the_stop.reset(token)


@contextlib.asynccontextmanager
async def submitting(provider: str, ticket: Ticket | None = None) -> AsyncIterator[None]:
    """Mark the current task as sending a paid submission to ``provider`` (see ``gate_submissions``)."""
    token = _submitting.set(_Submission(provider, ticket))
    try:
        yield
    finally:
        _submitting.reset(token)


def gate_submissions(provider: str, throttle: Any) -> Any:
    """The provider's throttle, refusing a submission whose turn comes after the provider was blocked
    (out of credits, daily cap): a submission can wait its turn for several seconds, and the check at
    the start of the submit task is then stale. Polls of running jobs still go through.

    When the run is asked to stop, a request still waiting for its turn is abandoned (nothing was
    sent), except the later requests of a submission whose first request has gone out (a lookup that
    tells whether it was paid) and the requests made ``past_the_stop`` (the run's end balances)."""

    async def gated(groups: list[str]) -> Callable[[], None] | None:
        run = _current.get(None)
        sub = _submitting.get()
        mine = sub if sub is not None and sub.provider == provider else None  # this provider's submission
        answered: Callable[[], None] | None
        if run is None or (mine is not None and mine.sent) or (mine is None and _past_the_stop.get()):
            answered = await throttle(groups)
        else:
            answered = await run.stop.race(throttle(groups), f"{provider} request")
        try:
            await _before_sending(run, provider, mine)
        except BaseException:
            if answered is not None:
                answered()  # not sent: its slots go back (ready a window later, as if it had been)
            raise
        return answered

    return gated


async def _before_sending(run: RunContext | None, provider: str, mine: Any) -> None:
    """A submission's last checks once its turn has come: the provider still takes submissions, the run
    is not stopping, and its balance gate counts it on the wire."""
    if mine is None or run is None:
        return
    if provider in run.blocked:
        raise run.blocked[provider]
    if not mine.sent:
        run.stop.check(f"{provider} submission")
        mine.sent = True
    if mine.ticket is not None:
        await mine.ticket.on_wire()


def set_current_run(run: RunContext) -> contextvars.Token[RunContext]:
    return _current.set(run)


def reset_current_run(token: contextvars.Token[RunContext]) -> None:
    _current.reset(token)


def submission_key(provider: str, step: Step, request: BaseModel, version: str) -> str:
    """Provider, step, canonical payload and explicit versions: never the run id or task source."""
    canonical = json.dumps(
        {
            "provider": provider,
            "step": str(step),
            "request_type": type(request).__name__,
            "payload": request.model_dump(mode="json", exclude_none=True, by_alias=True),
            "contract": PLUGIN_API_VERSION.split(".")[0],
            "version": version,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return f"submit-{provider}-{step}-{hashlib.sha256(canonical.encode()).hexdigest()[:40]}"
