"""The run's budget on its own: what is spent, held by jobs in flight, learned, refused."""

from __future__ import annotations

import asyncio
import random

import pytest

from flows.budget import Budget, BudgetExceeded


async def _pending(coro: object) -> asyncio.Task[str | None]:
    """Start a reservation and let it run until it has to wait (or is done)."""
    task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
    for _ in range(3):
        await asyncio.sleep(0)
    return task


async def test_jobs_in_flight_count_before_a_new_job_is_submitted() -> None:
    budget = Budget(max_total=100)
    first = await budget.reserve("pixii", "aplus", 40)
    second = await budget.reserve("pixii", "aplus", 40)
    third = await _pending(budget.reserve("pixii", "aplus", 40))
    assert not third.done()  # 40 + 40 in flight + 40 > 100: it may fit only if one is refunded
    budget.settle(first, 40, 40)  # failed and refunded
    assert await asyncio.wait_for(third, 1)
    budget.settle(second, 40)
    with pytest.raises(BudgetExceeded, match="40 of max_credits 100 credits spent, this job costs 70"):
        await budget.reserve("pixii", "aplus", 70)
    assert budget.refused == 1 and "1 job(s) not submitted" in (budget.note() or "")


async def test_an_unpublished_price_is_learned_and_its_first_job_runs_alone() -> None:
    budget = Budget(max_total=17)
    first = await budget.reserve("pixii", "scale:variation:1", None)
    assert budget.holds[first].credits == 17  # all the room: nothing else can pass the cap meanwhile
    second = await _pending(budget.reserve("pixii", "scale:variation:1", None))
    known = await _pending(budget.reserve("listingrva", "copy", 1))
    assert not second.done() and not known.done()
    budget.settle(first, 6)
    assert budget.learned == {("pixii", "scale:variation:1"): 6}
    hold = await asyncio.wait_for(second, 1)
    assert budget.holds[hold].credits == 6  # now a known price, in flight alongside others
    assert await asyncio.wait_for(known, 1)
    budget.settle(hold, 6)
    with pytest.raises(BudgetExceeded, match="this job costs 6"):
        await budget.reserve("pixii", "scale:variation:1", None)  # 12 spent + 6 > 17


async def test_a_price_told_at_submission_frees_the_rest_of_the_room_at_once() -> None:
    budget = Budget(per_provider={"listingrva": 10})
    hold = await budget.reserve("listingrva", "images:x", None)
    budget.submitted(hold, 3)
    assert budget.holds[hold].credits == 3 and budget.learned[("listingrva", "images:x")] == 3
    assert await budget.reserve("prodvisual", "images", 1000) is None  # no cap applies to it
    assert await budget.reserve("listingrva", "images:x", None)


async def test_a_submission_of_unknown_outcome_counts_as_spent_a_refused_one_does_not() -> None:
    budget = Budget(max_total=10)
    budget.release(await budget.reserve("pixii", "aplus", 4), maybe_charged=False)
    budget.release(await budget.reserve("pixii", "aplus", 4), maybe_charged=True)
    assert budget.spent == {"pixii": 4} and not budget.holds


async def test_many_concurrent_jobs_of_unknown_and_known_price_never_pass_the_cap() -> None:
    rng = random.Random(7)
    true_price = {"scale": 6, "listing": 15}
    budget = Budget(max_total=200, per_provider={"pixii": 120})
    paid: list[int] = []

    async def job(provider: str, key: str, estimate: int | None) -> None:
        try:
            hold = await budget.reserve(provider, key, estimate)
        except BudgetExceeded:
            return
        cost = estimate if estimate is not None else true_price[key]
        paid.append(cost)
        await asyncio.sleep(rng.random() / 100)
        budget.settle(hold, cost)

    jobs = [job("pixii", rng.choice(["scale", "listing"]), None) for _ in range(30)]
    jobs += [job("listingrva", "copy", rng.choice([1, 2, 5])) for _ in range(60)]
    await asyncio.gather(*jobs)
    assert sum(paid) <= 200 and sum(budget.spent.values()) == sum(paid)
    assert budget.spent["pixii"] <= 120 and not budget.holds
