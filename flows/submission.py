"""Sending one paid submission so that it is paid at most once, whatever the network does.

The one rule: a paid POST is resent only when the provider cannot have acted on it
(``providers.errors.resend_is_safe``: a 429, a connection never opened) or when it has been shown not
to have acted on it (a plugin's lookup found no job, or the balance shows no debit: ``flows.reconcile``).
Everything else that fails after the request may have been written ends *held*: a ``JobRef`` whose
``outcome`` says *charged, not retrievable* or *outcome unknown*. The submit task returns it, so it is
cached under the submission's key like any job: no later run resends it unless the user asks
(``resubmit_unknown``, which may pay twice).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel

from providers.contract import JobRef, Provider, Step
from providers.errors import (
    PermanentError,
    ProviderError,
    RetryableError,
    SubmitOutcomeUnknown,
    resend_is_safe,
)

from .intents import Intent
from .reconcile import BalanceGate, Verdict
from .retry import call_with_retries
from .runtime import RunContext, submitting

logger = logging.getLogger("listingflow.submission")

# A request the balance showed was not processed is sent again, but not forever: a provider whose
# responses keep getting lost after doing nothing is better held for a person.
MAX_SAFE_RESENDS = 3


class _Ambiguous(Exception):
    def __init__(self, error: RetryableError) -> None:
        self.error = error
        super().__init__(str(error))


async def submit_paid(
    run: RunContext,
    plugin: Provider,
    step: Step,
    request: BaseModel,
    *,
    label: str,
    cache_key: str,
    estimate: int | None,
    intent_keys: list[str] | None = None,
) -> JobRef:
    """The job reference of one paid submission, or a held reference when its outcome is not known."""
    if (earlier := await run.intents.pending(cache_key)) is not None:
        found = await interrupted_submission(plugin, step, request, earlier)
        if found is not None:  # the intent is ended by the caller once this reference is persisted
            return (
                found
                if isinstance(found, JobRef)
                else held_ref(plugin.name, step, cache_key, label, estimate, Verdict.UNKNOWN, found)
            )
    keys = [cache_key, *(intent_keys or [])]
    try:
        ref = await _submit_resolved(
            run,
            plugin,
            step,
            request,
            label=label,
            cache_key=cache_key,
            estimate=estimate,
            intent=lambda: run.intents.begin(keys, run.run_id, timeout=plugin.settings.timeout_seconds),
        )
    except ProviderError:  # answered (refused, out of credits, quota): nothing on its way any more
        await run.intents.end(keys, run.run_id)
        raise
    # The intent stays open until the caller has the task's persisted result (``pipeline._submit``,
    # ``Batcher._submit``): a run killed before Prefect writes the cached JobRef must leave the intent
    # pending, or the next run would find neither and pay again.
    return ref


async def interrupted_submission(
    plugin: Provider, step: Step, request: BaseModel, earlier: Intent
) -> JobRef | ProviderError | None:
    """An earlier run was stopped while this paid request was on its way: the job it created (the
    plugin's lookup), None when the lookup shows there is none, or why its outcome is unknown.

    The request may still be on its way or queued at the provider when this run starts: a lookup that
    finds nothing is trusted only once the sending run's answer deadline (its request timeout) and the
    provider's ``settle_seconds`` have passed; before that it is asked again then."""
    unknown = SubmitOutcomeUnknown(
        "an earlier run was stopped while this paid request was on its way; the provider may have "
        "processed and billed it "
        f"(sent at {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(earlier.started))} UTC)",
        provider=plugin.name,
    )
    try:
        found = await plugin.find_submitted(step, request, since=earlier.started)
        if found is None and (wait := _settled_at(plugin, earlier) - time.time()) > 0:
            logger.warning(
                "%s: a paid %s request of a stopped run (%s) is not listed yet; it may still be "
                "processed: looking again in %.0f s",
                plugin.name,
                step,
                earlier.run_id,
                wait,
            )
            await asyncio.sleep(wait)
            found = await plugin.find_submitted(step, request, since=earlier.started)
        return found
    except NotImplementedError:
        return unknown
    except ProviderError as exc:
        logger.warning("%s lookup of an interrupted submission failed: %s", plugin.name, exc)
        return unknown


def _settled_at(plugin: Provider, earlier: Intent) -> float:
    """When a job list that does not show the earlier run's request can be believed."""
    answer_by = earlier.answer_by or earlier.started + plugin.settings.timeout_seconds
    return answer_by + plugin.settings.settle_seconds


async def _submit_resolved(
    run: RunContext,
    plugin: Provider,
    step: Step,
    request: BaseModel,
    *,
    label: str,
    cache_key: str,
    estimate: int | None,
    intent: Callable[[], Awaitable[None]],
) -> JobRef:
    gate = run.gate(plugin.name)
    for resend in range(MAX_SAFE_RESENDS + 1):
        try:
            ref = await call_with_retries(
                lambda: _send(plugin, gate, step, request, intent),
                policy=run.settings.retry,
                what=f"submit {plugin.name} {label}",
            )
        except _Ambiguous as amb:
            verdict = await gate.decide(estimate)
            logger.warning(
                "%s submit %s failed after it may have been processed (%s): %s",
                plugin.name,
                label,
                amb.error,
                verdict.value,
            )
            if verdict is Verdict.NOT_CHARGED and resend < MAX_SAFE_RESENDS:
                continue
            if verdict is not Verdict.NOT_CHARGED and (
                found := await _recovered(plugin, step, request, estimate)
            ):
                gate.watching()  # its debit is in the balance already read; it may still be refunded
                return found
            return held_ref(plugin.name, step, cache_key, label, estimate, verdict, amb.error)
        except SubmitOutcomeUnknown as exc:  # the plugin's own lookup could not tell
            return held_ref(plugin.name, step, cache_key, label, estimate, Verdict.UNKNOWN, exc)
        gate.charged(
            ref.credits_at_submit if ref.credits_at_submit is not None else estimate, ref.balance_after
        )
        return ref
    raise AssertionError("unreachable")  # pragma: no cover


async def _recovered(plugin: Provider, step: Step, request: BaseModel, price: int | None) -> JobRef | None:
    """The lost submission's job, if the provider still tells us about it (a webhook event)."""
    try:
        return await plugin.recover_lost(step, request, price=price)
    except ProviderError as exc:
        logger.warning("%s: recovering a lost submission failed: %s", plugin.name, exc)
        return None


async def _send(
    plugin: Provider, gate: BalanceGate, step: Step, request: BaseModel, intent: Callable[[], Awaitable[None]]
) -> JobRef:
    async with gate.sending() as ticket, submitting(plugin.name, ticket):
        ticket.before_first_send = intent  # written only when the request really goes out
        try:
            return await plugin.submit(step, request)
        except RetryableError as exc:
            if resend_is_safe(exc):
                raise  # call_with_retries sends it again after its delay
            raise _Ambiguous(exc) from exc


def held_ref(
    provider: str,
    step: Step,
    cache_key: str,
    label: str,
    price: int | None,
    verdict: Verdict,
    error: ProviderError,
) -> JobRef:
    charged = verdict is Verdict.CHARGED
    reason = (
        f"charged, not retrievable: the response to the submit was lost ({error.message}) and the balance "
        f"shows it was debited {price} credits"
        if charged
        else f"outcome unknown: the submit failed after it may have been processed ({error.message}); it may "
        f"have cost {price if price is not None else 'an unknown number of'} credits"
    )
    meta: dict[str, Any] = {
        "label": label,
        "reason": reason,
        "possible_credits": price,
        "cache_key": cache_key,
        "error": error.to_dict(),
    }
    return JobRef(
        provider=provider,
        step=step,
        job_id=f"held-{cache_key.rsplit('-', 1)[-1][:16]}",
        kind="held",
        outcome="charged_not_retrievable" if charged else "unknown",
        credits_at_submit=price if charged else None,
        meta=meta,
    )


class HeldSubmission(PermanentError):
    """This output's submission is held (``JobRef.held``): it is reported, never resent by itself."""

    def __init__(self, ref: JobRef, *, earlier: bool) -> None:
        self.ref = ref
        self.earlier = earlier
        note = (
            f" (held since run {ref.host.run_id}; `listingflow unknown` lists it, --resubmit-unknown "
            "sends it again and may pay twice)"
            if earlier and ref.outcome == "unknown"
            else ""
        )
        super().__init__(
            f"{ref.meta.get('reason', 'submission held')}{note}", provider=ref.provider, code=ref.outcome
        )
