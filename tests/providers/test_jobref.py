"""The host's record of a job is typed and apart from the plugin's ``meta``; references cached by an
earlier version (the host's keys in ``meta``, pickled by Prefect's result store) stay readable."""

from __future__ import annotations

import pickle

from providers import JobRef, Step
from providers.contract import HostRecord

LEGACY_META = {"run_id": "run-1", "label": "aplus", "budget_hold": "h1", "member": "US/B0X#0", "asin": "B0X"}


def ref(**kw: object) -> JobRef:
    return JobRef(provider="pixii", step=Step.APLUS, job_id="job_1", kind="a_plus", **kw)


def test_a_reference_cached_by_an_earlier_version_is_read_into_the_host_record() -> None:
    old = ref(meta=dict(LEGACY_META)).model_dump(mode="json")
    del old["host"]  # as the earlier version wrote it
    host = JobRef.model_validate(old).host
    assert host == HostRecord(run_id="run-1", label="aplus", budget_hold="h1", member="US/B0X#0")


def test_a_pickled_reference_of_an_earlier_version_is_read_too() -> None:
    legacy = ref(meta=dict(LEGACY_META))
    state = legacy.__getstate__()
    del state["__dict__"]["host"]  # an object pickled before the field existed
    restored = JobRef.__new__(JobRef)
    restored.__setstate__(state)
    assert restored.host.member == "US/B0X#0" and restored.host.run_id == "run-1"
    assert pickle.loads(pickle.dumps(restored)).host == restored.host


def test_a_plugins_own_meta_is_left_alone() -> None:
    fresh = ref(meta={"label": "the plugin's", "member": "its own"})
    assert fresh.host == HostRecord() and fresh.meta == {"label": "the plugin's", "member": "its own"}
    assert JobRef.model_validate_json(ref(host={"run_id": "r2"}).model_dump_json()).host.run_id == "r2"
