"""Provider credentials from environment variables or Prefect Secret blocks, never from parameters.

Naming, for every installed provider plugin: the environment variable is the plugin settings' env
prefix + ``API_KEY`` (``PIXII_API_KEY``, ``LISTINGRVA_API_KEY``, ``PRODVISUAL_API_KEY``) and the Secret
block is the prefix in lower case + ``-api-key`` (``pixii-api-key`` ...;
``providers.contract.secret_block_name``, which the plugin settings read too). ``listingflow
bootstrap`` copies the variables into the blocks; the deployments' pull step
:func:`deployments.steps.provider_credentials` does the reverse in the flow-run process when a worker
host has no variable set, so workers on other machines need only ``PREFECT_API_URL``.

Values are only ever put into the flow-run process environment, which the plugin settings read. They
are never returned, logged, or written to parameters, artifacts or manifests.
"""

from __future__ import annotations

import os
from typing import Any

from providers.contract import Provider, secret_block_name


def api_key_env_var(provider: type[Provider]) -> str:
    """The environment variable the provider's settings read its credential from."""
    prefix = provider.settings_class.model_config.get("env_prefix") or f"{provider.name.upper()}_"
    return f"{prefix}API_KEY"


def installed_providers() -> dict[str, type[Provider]]:
    """The provider plugins this host loads (honouring ``LISTINGFLOW_PROVIDERS``)."""
    from flows.settings import get_settings
    from providers.registry import load_providers

    settings = get_settings()
    return dict(load_providers(allow=settings.providers, strict=settings.strict_plugins).providers)


async def aload_api_key(block_name: str | None) -> str | None:
    """The credential stored in the Secret block ``block_name`` (``secret_block_name``), None when
    there is no such block."""
    from prefect.blocks.system import Secret

    if block_name is None:
        return None
    try:
        block: Any = await Secret.aload(block_name)
    except ValueError:  # Prefect raises ValueError for an unknown block document
        return None
    value = block.get()
    return str(value) if value else None


async def aexport_credentials(providers: dict[str, type[Provider]] | None = None) -> dict[str, str]:
    """For each provider whose variable is unset, load its Secret block into ``os.environ``.

    Returns where each provider's credential comes from (``environment``, ``secret block NAME`` or
    ``missing``), never the value itself.
    """
    sources: dict[str, str] = {}
    for name, provider in sorted((providers if providers is not None else installed_providers()).items()):
        var = api_key_env_var(provider)
        if os.environ.get(var):
            sources[name] = "environment"
            continue
        block = secret_block_name(provider.settings_class)
        value = await aload_api_key(block)
        if value:
            os.environ[var] = value
            sources[name] = f"secret block {block}"
        else:
            sources[name] = "missing"
    return sources
