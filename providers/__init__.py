"""Provider plugins: the contract, the shared error taxonomy, discovery, and the built-ins."""

from .contract import PLUGIN_API_VERSION, JobRef, JobResult, Provider, Step
from .errors import PermanentError, ProviderError, QuotaExhausted, RetryableError

__all__ = [
    "PLUGIN_API_VERSION",
    "JobRef",
    "JobResult",
    "PermanentError",
    "Provider",
    "ProviderError",
    "QuotaExhausted",
    "RetryableError",
    "Step",
]
