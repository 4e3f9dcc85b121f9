"""Pull steps ``prefect.yaml`` runs on the worker host before each flow run.

A process worker runs each flow run in a fresh process (in a temporary directory unless told
otherwise). These steps make it run from this host's listingflow checkout and give it the provider
credentials stored in Secret blocks. Both work on any host where listingflow is installed
(``pip install -e .`` in a checkout), wherever the checkout lives, with no per-host configuration.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any
from uuid import UUID

from .credentials import aexport_credentials

CHECKOUT = Path(__file__).resolve().parents[1]
ENTRYPOINT_FILE = Path("flows") / "catalog_flow.py"


def use_checkout(directory: str | None = None) -> dict[str, str]:
    """Change into the listingflow checkout: ``directory``, else ``$LISTINGFLOW_CHECKOUT``, else the
    checkout this package is installed from. Relative catalog and archive paths, ``.env`` and the
    default ``.listingflow`` state dir are then resolved there.

    Returns ``{"directory": ...}`` like Prefect's ``set_working_directory``, so the worker uses it as
    the flow run's working directory.
    """
    target = Path(directory or os.environ.get("LISTINGFLOW_CHECKOUT") or CHECKOUT).expanduser().resolve()
    if not (target / ENTRYPOINT_FILE).is_file():
        raise FileNotFoundError(
            f"{target} is not a listingflow checkout (no {ENTRYPOINT_FILE}); "
            "set LISTINGFLOW_CHECKOUT on the worker host or `pip install -e .` from the checkout"
        )
    os.chdir(target)
    return {"directory": str(target)}


async def provider_credentials() -> dict[str, str]:
    """Load the credential of every provider whose variable is unset on this host from its Secret
    block into the flow-run process environment. Logs and returns the sources, never the values."""
    sources = await aexport_credentials()
    summary = ", ".join(f"{name}: {source}" for name, source in sources.items())
    missing = [name for name, source in sources.items() if source == "missing"]
    _run_logger().log(
        logging.WARNING if missing else logging.INFO,
        "provider credentials: %s%s",
        summary,
        f" (no {', '.join(missing)} key: set it on the worker host or run `listingflow bootstrap` with it)"
        if missing
        else "",
    )
    return {"provider_credentials": summary}


def _run_logger() -> Any:
    """The flow run's logger (shown in the UI) when the worker set the run id, else a plain one."""
    from prefect.logging.loggers import flow_run_logger, get_logger

    run_id = os.environ.get("PREFECT__FLOW_RUN_ID")
    if run_id:
        try:
            return flow_run_logger(flow_run_id=UUID(run_id))
        except ValueError:
            pass
    return get_logger("listingflow.deployments")
