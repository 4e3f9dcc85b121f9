"""One Secret block name per provider, whoever reads or writes it.

A plugin's env prefix need not be its name (``acme`` reading ``ACME_AI_API_KEY``): ``listingflow
bootstrap`` and the deployments' pull step must store and load the very block the plugin settings read.
Fast: Prefect's ``Secret`` is replaced by a recorder, no server.
"""

from __future__ import annotations

from typing import Any

import pytest
from prefect.blocks.system import Secret
from pydantic_settings import SettingsConfigDict

from deployments.bootstrap import _secrets
from deployments.credentials import aexport_credentials
from providers.contract import ProviderSettings, secret_block_name


class AcmeSettings(ProviderSettings):
    model_config = SettingsConfigDict(env_prefix="ACME_AI_", extra="ignore")
    base_url: str = "https://api.acme.example"


class Acme:
    """What the credential helpers read of a provider plugin."""

    name = "acme"
    settings_class = AcmeSettings


@pytest.fixture
def blocks(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """The block names asked for (``load``) and written (``save``); no block exists."""
    seen: dict[str, list[str]] = {"load": [], "save": []}

    class Stored:
        def get(self) -> str:
            return "acme-key-from-block"

    def load(cls: Any, name: str, **kw: Any) -> Stored:
        seen["load"].append(name)
        return Stored()

    async def aload(cls: Any, name: str, **kw: Any) -> Stored:
        seen["load"].append(name)
        if not seen["save"]:
            raise ValueError("no such block")
        return Stored()

    async def save(self: Any, name: str, **kw: Any) -> None:
        seen["save"].append(name)

    monkeypatch.setattr(Secret, "load", classmethod(load))
    monkeypatch.setattr(Secret, "aload", classmethod(aload))
    monkeypatch.setattr(Secret, "save", save)
    monkeypatch.delenv("ACME_AI_API_KEY", raising=False)
    return seen


async def test_bootstrap_the_pull_step_and_the_settings_use_one_block_name(
    blocks: dict[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACME_AI_API_KEY", "acme-key")
    [line] = await _secrets({"acme": Acme})
    assert line == "secret acme_ai-api-key: created (from ACME_AI_API_KEY)"

    monkeypatch.delenv("ACME_AI_API_KEY")
    assert await aexport_credentials({"acme": Acme}) == {"acme": "secret block acme_ai-api-key"}

    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("ACME_AI_API_KEY")
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        settings = AcmeSettings()
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "acme-key-from-block"
    assert (
        set(blocks["save"]) | set(blocks["load"]) == {secret_block_name(AcmeSettings)} == {"acme_ai-api-key"}
    )


def test_the_built_in_names_stay_as_documented() -> None:
    from deployments.credentials import installed_providers

    providers = installed_providers()
    assert {name: secret_block_name(p.settings_class) for name, p in providers.items()} == {
        name: f"{name}-api-key" for name in providers
    }
