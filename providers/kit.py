"""The request/response kit every provider client shares.

A plugin makes one ``Kit`` for its provider and uses it for the three things every client does:

* ``build(Model, data, **fields)``: a validated request, or ``RequestValidationError`` naming the
  offending field (prefixed with ``where``, e.g. ``products[US/B0X].title``), before anything is sent;
* ``parse(Model, body, what=...)``: a typed response, or ``MalformedResponse`` (retryable) naming the
  fields that break the contract;
* ``error(status, code, message, ...)``: a non-2xx answer mapped onto the shared taxonomy by the
  provider's ``ErrorMap``, a table of ``ErrorRule`` rows read top to bottom.

Reading the code and message out of an error body stays in each client: the bodies differ.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .errors import (
    MalformedResponse,
    PermanentError,
    ProviderError,
    QuotaExhausted,
    RateLimited,
    RequestValidationError,
    RetryableError,
    ServerError,
)

M = TypeVar("M", bound=BaseModel)
SERVER_ERRORS = frozenset(range(500, 600))


@dataclass(frozen=True)
class ErrorRule:
    """One row of an error table: the class for answers with one of ``statuses`` (any when None) whose
    code is one of ``codes`` or matches ``pattern`` (case-insensitive; any code when both are None)."""

    error: type[ProviderError]
    statuses: frozenset[int] | None = None
    codes: frozenset[str] | None = None
    pattern: str | None = None

    def matches(self, status: int, code: str | None) -> bool:
        if self.statuses is not None and status not in self.statuses:
            return False
        if self.codes is not None and code not in self.codes:
            return False
        return self.pattern is None or bool(code and re.search(self.pattern, code, re.IGNORECASE))


@dataclass(frozen=True)
class ErrorMap:
    """A provider's error table. Answers no row matches: 429 rate-limited, 5xx retryable, else
    permanent."""

    rules: tuple[ErrorRule, ...] = ()

    @classmethod
    def of(
        cls,
        by_code: Mapping[str, type[ProviderError]] | None = None,
        by_status: Mapping[int, type[ProviderError]] | None = None,
        *rules: ErrorRule,
    ) -> ErrorMap:
        """Exact codes first, then ``rules``, then statuses."""
        rows = [ErrorRule(e, codes=frozenset({c})) for c, e in (by_code or {}).items()]
        rows += list(rules)
        rows += [ErrorRule(e, statuses=frozenset({s})) for s, e in (by_status or {}).items()]
        return cls(tuple(rows))

    def classify(self, status: int, code: str | None) -> type[ProviderError]:
        for rule in self.rules:
            if rule.matches(status, code):
                return rule.error
        if status == 429:
            return RateLimited
        return ServerError if status in SERVER_ERRORS else PermanentError


@dataclass(frozen=True)
class Kit:
    """Build, parse and map errors for one provider (``Kit("pixii", ErrorMap.of(...))``)."""

    provider: str
    errors: ErrorMap = field(default_factory=ErrorMap)

    def build(
        self,
        model: type[M],
        data: Mapping[str, Any] | BaseModel | None = None,
        *,
        where: str = "",
        **fields: Any,
    ) -> M:
        """A validated ``model`` from ``data`` and/or ``fields`` (an instance of ``model`` is returned as
        is; another model is read through its fields)."""
        if isinstance(data, model) and not fields:
            return data
        if isinstance(data, BaseModel):
            data = data.model_dump(by_alias=True, exclude_none=True)
        try:
            return model.model_validate({**(data or {}), **fields})
        except ValidationError as exc:
            err = RequestValidationError.from_pydantic(exc, provider=self.provider, model=model.__name__)
        if not where:
            raise err
        raise RequestValidationError(
            f"{where}: {err.message}",
            provider=self.provider,
            code=err.code,
            field=f"{where}.{err.field}" if err.field else where,
        )

    def parse(self, model: type[M], body: Any, *, what: str) -> M:
        """A 2xx body that does not fit the contract is ``MalformedResponse`` (retryable), not a crash."""
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            fields = ", ".join(".".join(str(p) for p in e["loc"]) or "body" for e in exc.errors()[:5])
            raise MalformedResponse(
                f"{what} returned an unexpected body (problem at: {fields})", provider=self.provider
            ) from None

    def error(
        self,
        status: int,
        code: str | None,
        message: str,
        *,
        retry_after: float | None = None,
        field: str | None = None,
        detail: str | None = None,
        error: type[ProviderError] | None = None,
    ) -> ProviderError:
        """The error for a non-2xx answer: ``error`` when the caller decided, else the table's class."""
        cls = error or self.errors.classify(status, code)
        kw: dict[str, Any] = {"provider": self.provider, "code": code, "status": status, "detail": detail}
        if issubclass(cls, RetryableError | QuotaExhausted):
            kw["retry_after"] = retry_after
        elif issubclass(cls, RequestValidationError):
            kw["field"] = field
        return cls(message, **kw)
