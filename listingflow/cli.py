"""The ``listingflow`` command: run, estimate, providers, sandbox, bootstrap."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from providers.contract import STEP_ORDER

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()
err = Console(stderr=True)


@app.callback()
def _keep_prefect_files_local() -> None:
    """Prefect's local files (telemetry id, result storage, memo store) go under the listingflow state
    folder, not ~/.prefect, unless PREFECT_HOME is set; runs before any command imports Prefect."""
    from listingflow.prefect_home import use_state_dir_for_prefect
    from listingflow.settings import get_settings

    use_state_dir_for_prefect(get_settings().state_dir)


def _quiet_prefect(verbose: bool) -> None:
    """Prefect's console logs are for the UI; the terminal gets a progress bar and a summary."""
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "ERROR")
        os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def _kv(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{what}: expected NAME=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _params(catalog: str, steps: list[str] | None, provider: list[str], styles: list[str], size: int | None,
            platform: str | None, aplus_types: list[str], scale_mode: str | None, language: str | None,
            products: list[str], archive: str | None, force: list[str], rerun_failed_of: str | None,
            max_credits: int | None, max_credits_for: list[str], price: list[str],
            resubmit_unknown: bool = False) -> Any:  # fmt: skip
    from pydantic import ValidationError

    from flows.params import RunParameters

    data: dict[str, Any] = {"catalog": catalog, "products": products, "archive": archive, "force": force,
                            "rerun_failed_of": rerun_failed_of, "resubmit_unknown": resubmit_unknown}  # fmt: skip
    if steps:
        data["steps"] = steps
    if provider:
        data["providers"] = _kv(provider, "--provider")
    images: dict[str, Any] = {}
    if styles:
        images["styles"] = styles
    if size:
        images["size"] = size
    if platform:
        images["platform"] = platform
        data["copy_options"] = {"platform": platform}
    if images:
        data["image_options"] = images
    if aplus_types:
        data["aplus_options"] = {"types": aplus_types}
    if scale_mode or language:
        data["scale_options"] = {k: v for k, v in {"mode": scale_mode, "language": language}.items() if v}
    data["budget"] = {"max_credits": max_credits,
                      "per_provider": {k: int(v) for k, v in _kv(max_credits_for, "--max-credits-for").items()}}
    data["price_per_credit"] = {k: float(v) for k, v in _kv(price, "--price").items()}
    try:
        return RunParameters.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'parameters'}: {e['msg']}" for e in exc.errors())
        raise typer.BadParameter(problems) from None


Steps = Annotated[list[str] | None, typer.Option("--step", "-s", help=f"step to run (repeat): {', '.join(STEP_ORDER)}")]
ProviderOpt = Annotated[list[str], typer.Option("--provider", "-p", help="STEP=PROVIDER, e.g. images=pixii")]
Styles = Annotated[list[str], typer.Option("--style", help="image style id (repeat)")]
Size = Annotated[int | None, typer.Option(help="image size in px: 1000, 1200, 1500 or 2000")]
Platform = Annotated[str | None, typer.Option(help="target platform for copy and images, e.g. amazon")]
APlus = Annotated[list[str], typer.Option("--aplus-type", help="'A+ Basic', 'A+ Premium', 'A+ Premium Mobile'")]
ScaleMode = Annotated[str | None, typer.Option(help="catalog, inspire, variation or language")]
Language = Annotated[str | None, typer.Option(help="target language for scale mode 'language'")]
Products = Annotated[list[str], typer.Option("--product", help="only this ASIN (repeat)")]
ArchiveOpt = Annotated[str | None, typer.Option(help="local folder or s3://bucket/prefix")]
Force = Annotated[list[str], typer.Option("--force", help="regenerate this step; SPENDS CREDITS AGAIN")]
Rerun = Annotated[str | None, typer.Option(
    help="only the failed products of this run id or manifest, with that run's parameters (options given here "
    "with a non-default value override them)")]
MaxCredits = Annotated[int | None, typer.Option(help="stop submitting past this many credits in total")]
MaxFor = Annotated[list[str], typer.Option("--max-credits-for", help="PROVIDER=N")]
Price = Annotated[list[str], typer.Option("--price", help="PROVIDER=money per credit, for the cost summary")]
ResubmitUnknown = Annotated[bool, typer.Option(
    "--resubmit-unknown", help="send again submissions held with an unknown outcome; MAY PAY TWICE")]


@app.command()
def run(
    catalog: Annotated[str, typer.Argument(help="CSV/JSON/JSONL catalog, local path or s3:// URI")],
    step: Steps = None, provider: ProviderOpt = [], style: Styles = [], size: Size = None,  # noqa: B006
    platform: Platform = None, aplus_type: APlus = [], scale_mode: ScaleMode = None,  # noqa: B006
    language: Language = None, product: Products = [], archive: ArchiveOpt = None,  # noqa: B006
    force: Force = [], rerun_failed_of: Rerun = None, max_credits: MaxCredits = None,  # noqa: B006
    max_credits_for: MaxFor = [], price: Price = [],  # noqa: B006
    resubmit_unknown: ResubmitUnknown = False,
    sandbox: Annotated[bool, typer.Option(help="run against local sandboxes (no network, no real credits)")] = False,
    sandbox_job_seconds: Annotated[float, typer.Option(help="sandbox job duration")] = 1.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="show Prefect's logs")] = False,
) -> None:
    """Run the pipeline over a catalog, locally (a Prefect server is started if none is configured)."""
    _quiet_prefect(verbose)
    params = _params(catalog, step, provider, style, size, platform, aplus_type, scale_mode, language, product,
                     archive, force, rerun_failed_of, max_credits, max_credits_for, price,
                     resubmit_unknown)  # fmt: skip
    if params.resubmit_unknown:
        err.print("[yellow]--resubmit-unknown: submissions held with an unknown outcome are sent again; the "
                  "provider may already have billed them, so this MAY PAY TWICE.[/yellow]")  # fmt: skip
    if params.force:
        err.print(f"[yellow]--force {', '.join(params.force)}: these steps are regenerated and SPEND CREDITS "
                  "AGAIN even where an earlier run already paid for them.[/yellow]")  # fmt: skip
    code = _run_sync(params, sandbox=sandbox, job_seconds=sandbox_job_seconds, verbose=verbose)
    raise typer.Exit(code)


class _StopOnSignals:
    """Ctrl-C and SIGTERM during ``listingflow run``: the first stops the run (no new submissions, jobs
    in flight kept for the next run, manifest written), the second exits at once.

    Installed before the local server and sandboxes start (a signal then aborts the start-up, nothing
    was submitted), and again when the flow is running: Prefect's flow engine installs its own
    SIGTERM handler for the length of a flow run, which would crash the run instead."""

    def __init__(self, mute_prefect: bool = True) -> None:
        self.mute_prefect = mute_prefect
        self.signum: int | None = None
        self.stop: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def install(self) -> None:
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.handle)

    def attach(self, stop: Any) -> None:
        """The run is under way: stop requests go to it from now on."""
        self.stop, self.loop = stop, asyncio.get_running_loop()
        self.install()
        if self.signum is not None:  # a signal came while the flow was starting
            stop.request(self.name)

    @property
    def name(self) -> str:
        import signal

        return signal.Signals(self.signum).name if self.signum else ""

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or 0)

    def handle(self, signum: int, frame: Any) -> None:  # noqa: ARG002 - the signal module's signature
        if self.signum is not None:
            self.exit_now()
        self.signum = signum
        if self.mute_prefect:
            _mute_prefect_console()
        if self.stop is None or self.loop is None:
            raise KeyboardInterrupt  # still starting: nothing was submitted, unwind the start-up
        try:
            self.loop.call_soon_threadsafe(self.stop.request, self.name)
        except RuntimeError:  # the loop is closed: the run has already ended
            return
        console.print(f"[yellow]{self.name}: stopping - no new submissions; jobs in flight are kept for the next "
                      "run. Press Ctrl-C again to exit at once.[/yellow]")  # fmt: skip

    def exit_now(self) -> None:
        from listingflow.local import kill_local_servers

        kill_local_servers()
        if sys.stdout.isatty():
            sys.stdout.write("\x1b[?25h")  # the progress bar hides the cursor
        sys.stdout.write("\nexited at once on a second signal: no run manifest written; jobs already "
                         "submitted are cached and resume on the next run\n")
        sys.stdout.flush()
        os._exit(self.exit_code)


def _mute_prefect_console() -> None:
    """Prefect logs every task run the stop ends as an error with its traceback: the person who pressed
    Ctrl-C gets one line from us instead (the logs still reach the Prefect UI)."""
    import logging

    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger(), *(lg for lg in logging.root.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]  # fmt: skip
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler):
                handler.setLevel(logging.CRITICAL)


def _run_sync(params: Any, *, sandbox: bool, job_seconds: float, verbose: bool = False) -> int:
    from flows import catalog_flow as cf

    stopper = _StopOnSignals(mute_prefect=not verbose)
    stopper.install()
    cf.HOOKS["on_stoppable"] = stopper.attach
    try:
        code = _run_local(params, sandbox=sandbox, job_seconds=job_seconds)
    except KeyboardInterrupt:
        if stopper.signum is None:
            raise
        err.print(f"[yellow]{stopper.name}: stopped before any product was started; nothing was submitted[/yellow]")
        return stopper.exit_code
    finally:
        # the handlers stay: a second Ctrl-C while the command drains Prefect's logs and exits still exits at once
        cf.HOOKS["on_stoppable"] = None
    return stopper.exit_code if stopper.signum else code


def _run_local(params: Any, *, sandbox: bool, job_seconds: float) -> int:
    from contextlib import ExitStack

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from listingflow.local import configured_api_url, discard_sandbox_state, local_prefect_server, running_sandboxes
    from listingflow.server import running_server
    from listingflow.settings import get_settings, reset_settings
    from providers.registry import load_providers

    with ExitStack() as stack:
        if sandbox:
            registry = load_providers()
            names = {params.providers.for_step(s) for s in params.ordered_steps()}
            stack.enter_context(running_sandboxes({n: registry.get(n) for n in names}, job_seconds=job_seconds))
            for n in names:  # sandbox jobs take seconds, not minutes: poll at a matching cadence
                prefix = registry.get(n).settings_class.model_config.get("env_prefix", f"{n.upper()}_")
                os.environ.setdefault(f"{prefix}POLL_INTERVAL_SECONDS", str(max(0.2, job_seconds / 2)))
            console.print(f"[dim]sandboxes on loopback: {', '.join(sorted(names))}[/dim]")
        reset_settings()
        settings = get_settings()
        if sandbox:  # these sandboxes' jobs end with this command: so does what was cached about them
            stack.callback(discard_sandbox_state, settings.sandbox_dir)
        if not configured_api_url() and running_server(settings.state_dir) is None:
            console.print("[dim]starting a local Prefect server in the background (later runs reuse it; "
                          "`listingflow server stop` stops it)...[/dim]")  # fmt: skip
        api = stack.enter_context(local_prefect_server(settings.state_dir))
        console.print(f"[dim]Prefect API: {api}[/dim]")

        from flows import catalog_flow as cf

        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=console, transient=False)  # fmt: skip
        bar: dict[str, Any] = {}

        def on_start(total: int, archive_uri: str) -> None:
            progress.start()
            bar["id"] = progress.add_task("products", total=total)

        def on_done(outcome: Any, done: int, total: int) -> None:
            mark = {"complete": "[green]done[/green]", "deferred": "[yellow]deferred[/yellow]",
                    "interrupted": "[yellow]interrupted[/yellow]"}.get(
                outcome.status, f"[red]{outcome.status}[/red]")
            progress.console.print(f"  {outcome.key:<18} {mark}")
            progress.update(bar["id"], completed=done)

        cf.HOOKS["on_start"] = on_start
        cf.HOOKS["on_product_done"] = on_done
        started = time.monotonic()
        try:
            state = asyncio.run(cf.catalog_flow(**_flow_kwargs(params), return_state=True))
        finally:
            if progress.live.is_started:
                progress.stop()
        summary = cf.LAST_SUMMARY.get("last")
        if summary is None:
            err.print(f"[red]run failed before it started: {state.message}[/red]")
            try:
                state.result()
            except Exception as exc:  # noqa: BLE001 - show the reason, not a traceback
                err.print(f"[red]{type(exc).__name__}: {exc}[/red]")
            return 2
        if summary.refused:
            err.print("[bold red]run refused, nothing was submitted:[/bold red]")
            for problem in summary.refused:
                err.print(f"  {problem}", markup=False, highlight=False, soft_wrap=True)
            return 2
        _print_summary(summary, time.monotonic() - started)
        return 0 if summary.ok else 1


def _flow_kwargs(params: Any) -> dict[str, Any]:
    return params.model_dump(mode="json", by_alias=True)


def _print_summary(summary: Any, elapsed: float) -> None:
    console.print()
    style = "green" if summary.ok else ("red" if summary.refused else "yellow")
    manifest = f"{summary.archive}/runs/{summary.run_id}/manifest.json"
    if not summary.interrupted:
        console.print(f"[bold {style}]{summary.headline()}[/bold {style}]  ({elapsed:.0f}s)")
        if summary.refused:
            return
        console.print(f"outputs: [bold]{summary.archive}[/bold]")
        console.print(f"run manifest: {manifest}")
    for note in summary.notes:
        console.print(f"note: {note}", style="dim", markup=False, highlight=False)
    if summary.cost is not None:
        table = Table(title="Cost summary (credits)", box=box.SIMPLE_HEAD, pad_edge=False)
        for col in ("provider", "step", "jobs", "charged", "refunded", "net", "reused", "money", "requests"):
            table.add_column(col, justify="right" if col not in ("provider", "step") else "left")
        cost = summary.cost
        for line in cost.by("step"):
            table.add_row(line.provider, line.step, str(line.jobs), _credits(line.charged, line.unknown_jobs),
                          str(line.refunded), _credits(line.net, line.unknown_jobs), str(line.reused_jobs),
                          line.money_text(cost.currency), "")  # fmt: skip
        for line in cost.by("provider"):
            table.add_row(f"[bold]{line.provider}[/bold]", "all", str(line.jobs),
                          _credits(line.charged, line.unknown_jobs), str(line.refunded),
                          _credits(line.net, line.unknown_jobs), str(line.reused_jobs),
                          line.money_text(cost.currency), str(cost.requests.get(line.provider, 0)))  # fmt: skip
        t = cost.total
        table.add_row("[bold]total[/bold]", "", str(t.jobs), _credits(t.charged, t.unknown_jobs), str(t.refunded),
                      _credits(t.net, t.unknown_jobs), str(t.reused_jobs), cost.money_cell(t),
                      str(sum(cost.requests.values())))  # fmt: skip
        console.print(table)
        console.print(f"cost summary: {summary.archive}/runs/{summary.run_id}/cost-summary.json")
    failures = summary.failure_report(include_interrupted=False)
    if failures:
        console.print("[bold]not done:[/bold]")
        for line in failures:
            console.print(f"  {line}", markup=False, highlight=False)  # "[pixii] ..." is text, not markup
    if summary.gallery:  # what to open next, after the failures (a long list must not bury it), on one line
        console.print(f"review gallery: {summary.gallery}", soft_wrap=True, markup=False, highlight=False)
    if summary.interrupted:  # last, in one line: what the person who pressed Ctrl-C looks for
        console.print(f"[bold yellow]{summary.headline()}[/bold yellow] ({elapsed:.0f}s); manifest: {manifest}",
                      soft_wrap=True)  # fmt: skip


def _credits(value: int, unknown: int) -> str:
    return f"{value} + {unknown} unknown" if unknown else str(value)



@app.command()
def estimate(
    catalog: Annotated[str, typer.Argument(help="CSV/JSON/JSONL catalog")],
    step: Steps = None, provider: ProviderOpt = [], style: Styles = [], size: Size = None,  # noqa: B006
    platform: Platform = None, aplus_type: APlus = [], scale_mode: ScaleMode = None,  # noqa: B006
    language: Language = None, product: Products = [], archive: ArchiveOpt = None,  # noqa: B006
    force: Force = [],  # noqa: B006
    balances: Annotated[bool, typer.Option(help="read current balances from the providers")] = True,
) -> None:
    """Expected credits per provider and step, from published prices. Spends nothing."""
    params = _params(catalog, step, provider, style, size, platform, aplus_type, scale_mode, language, product,
                     archive, force, None, None, [], [])  # fmt: skip
    asyncio.run(_estimate(params, balances))


async def _estimate(params: Any, balances: bool) -> None:
    import httpx

    from flows.archive import SpooledArchive, open_archive, product_manifest_key
    from flows.catalog import CatalogError, load_catalog
    from flows.estimate import estimate_run
    from listingflow.settings import get_settings
    from providers.registry import load_providers

    settings = get_settings()
    try:
        catalog = load_catalog(params.catalog, s3_endpoint_url=settings.s3_endpoint_url)
    except CatalogError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    registry = load_providers(allow=settings.providers)
    names = sorted({params.providers.for_step(s) for s in params.ordered_steps()})
    products = [p for p in catalog.products if not params.products or p.asin in params.products]
    archive = SpooledArchive(open_archive(params.archive or settings.archive, endpoint_url=settings.s3_endpoint_url),
                             settings.spool_path)  # fmt: skip
    manifests = {p.key: await archive.get_json(product_manifest_key(archive.prefix, p.country_code, p.asin))
                 for p in products}  # fmt: skip
    async with httpx.AsyncClient() as http:
        providers = {n: registry.get(n)(http) for n in names}
        est = estimate_run(params, products, providers, manifests)
        table = Table(title=f"Estimate for {len(products)} products (nothing is spent)")
        for col in ("provider", "step", "jobs", "credits", "unknown-price jobs", "already done"):
            table.add_column(col)
        for ln in est.lines:
            table.add_row(ln.provider, ln.step, str(ln.jobs), str(ln.credits), str(ln.unknown_jobs), str(ln.already_done))
        table.add_row("[bold]total[/bold]", "", str(sum(ln.jobs for ln in est.lines)), str(est.credits_for()),
                      str(est.unknown_for()), str(sum(ln.already_done for ln in est.lines)))  # fmt: skip
        console.print(table)
        for problem in est.invalid:
            console.print(f"[yellow]not counted: {problem}[/yellow]")
        for r in catalog.rejected:
            console.print(f"[yellow]rejected row: {r}[/yellow]")
        if balances:
            for n in names:
                try:
                    bal = await providers[n].balance()
                    shown = "no balance endpoint" if bal is None else str(bal)
                except Exception as exc:  # noqa: BLE001 - an unreachable provider is reported, not fatal
                    shown = f"unavailable ({type(exc).__name__})"
                console.print(f"balance {n}: {shown}; this run needs {est.credits_for(n)}"
                              + (f" + {est.unknown_for(n)} job(s) of unknown price" if est.unknown_for(n) else ""))


@app.command()
def providers(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List installed provider plugins with their capabilities, limits and prices."""
    from listingflow.settings import get_settings
    from providers.registry import load_providers

    settings = get_settings()
    registry = load_providers(allow=settings.providers, strict=settings.strict_plugins)
    if as_json:
        out = {n: {"capabilities": sorted(p.capabilities), "api_version": p.api_version,
                   "limits": p.limits.model_dump(mode="json"),
                   "prices": [x.model_dump(mode="json") for x in p.prices]}
               for n, p in registry.providers.items()}  # fmt: skip
        out["_failed"] = registry.failures  # type: ignore[assignment]
        console.print_json(json.dumps(out))
        return
    for name, p in sorted(registry.providers.items()):
        console.print(f"[bold]{name}[/bold] ({p.display_name}, contract {p.api_version})")
        console.print(f"  capabilities: {', '.join(s for s in ('copy', 'images', 'aplus', 'scale') if s in p.capabilities)}")
        limits = ", ".join(f"{g.group} {g.requests}/{g.per_seconds:g}s" for g in p.limits.route_groups)
        daily = f"; {p.limits.daily_requests}/day ({p.limits.daily_counts})" if p.limits.daily_requests else ""
        console.print(f"  limits: {limits}{daily}; in flight {p.limits.max_inflight_jobs}; batch {p.limits.max_batch_size}")
        prices = ", ".join(f"{x.step}:{x.item}={'unknown' if x.credits is None else x.credits}" for x in p.prices)
        console.print(f"  prices (credits): {prices}")
    for name, reason in registry.failures.items():
        err.print(f"[yellow]skipped {name}: {reason}[/yellow]")


@app.command()
def unknown(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List held submissions: paid requests whose outcome a run could not establish (never resent
    unless a run is given --resubmit-unknown), and those charged whose output cannot be retrieved."""
    from flows.held import HeldStore
    from listingflow.settings import get_settings

    records = list(HeldStore(get_settings().held_path))
    if as_json:
        console.print_json(json.dumps([r.model_dump() for r in records]))
        return
    if not records:
        console.print("no held submissions")
        return
    for r in records:
        cost = "unknown price" if r.credits is None else f"{r.credits} credits"
        console.print(f"{r.outcome}: {r.provider} {r.step} {r.product} ({r.label}), {cost}, run {r.run_id}")
        console.print(f"  {r.reason}", soft_wrap=True)
    possible = sum(r.credits or 0 for r in records)
    console.print(f"{len(records)} held, up to {possible} credits. Check the provider's dashboard; "
                  "`listingflow run ... --resubmit-unknown` sends the unknown ones again (MAY PAY TWICE).")


@app.command()
def sandbox(
    port: Annotated[list[str], typer.Option(help="PROVIDER=PORT")] = [],  # noqa: B006
    job_seconds: Annotated[float, typer.Option(help="job duration")] = 2.0,
) -> None:
    """Start every provider's sandbox on loopback until Ctrl-C; prints the env to point runs at them."""
    from listingflow.local import discard_sandbox_state, new_sandbox_instance, running_sandboxes, sandbox_base_url
    from listingflow.settings import Settings
    from providers.registry import load_providers

    registry = load_providers()
    ports = {k: int(v) for k, v in _kv(port, "--port").items()}
    instance = new_sandbox_instance()
    with running_sandboxes(dict(registry.providers), job_seconds=job_seconds, ports=ports, set_env=False) as boxes:
        for name, box in boxes.items():
            p = registry.get(name)
            prefix = p.settings_class.model_config.get("env_prefix", f"{name.upper()}_")
            # plain print: rich wraps long lines at the terminal width, which breaks copy-paste
            print(f"export {prefix}BASE_URL={sandbox_base_url(p, box)} {prefix}API_KEY={p.sandbox_key}", flush=True)
        # runs against these sandboxes keep their cached jobs apart from real runs' (and drop them below)
        print(f"export LISTINGFLOW_SANDBOX_MODE=true LISTINGFLOW_SANDBOX_INSTANCE={instance}", flush=True)
        console.print("[dim]records: GET <base>/_sandbox/records; Ctrl-C to stop[/dim]")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            discard_sandbox_state(Settings(sandbox_instance=instance).sandbox_dir)


server_app = typer.Typer(no_args_is_help=True, help="The local Prefect server `listingflow run` starts in the "
                                                     "background when PREFECT_API_URL is not set.")  # fmt: skip
app.add_typer(server_app, name="server")


@server_app.command("status")
def server_status() -> None:
    """Whether the local Prefect server for this state dir (.listingflow/) is running, and where."""
    from listingflow.local import configured_api_url
    from listingflow.server import running_server
    from listingflow.settings import get_settings

    if configured_api_url():
        console.print(f"PREFECT_API_URL is set ({os.environ.get('PREFECT_API_URL', 'in the Prefect profile')}): "
                      "runs use that server, not a local one", soft_wrap=True)  # fmt: skip
    record = running_server(get_settings().state_dir)
    if record is None:
        console.print("local Prefect server: not running (the next `listingflow run` starts it)")
        raise typer.Exit(1)
    console.print(f"local Prefect server: running at {record.url} (pid {record.pid}, up "
                  f"{time.time() - record.started_at:.0f}s, log {record.log})", soft_wrap=True)  # fmt: skip


@server_app.command("stop")
def server_stop() -> None:
    """Stop the local Prefect server (run history, limits and cached submissions stay on disk)."""
    from listingflow.server import stop_server
    from listingflow.settings import get_settings

    record = stop_server(get_settings().state_dir)
    console.print("local Prefect server: " + (f"stopped (pid {record.pid})" if record else "was not running"))


@app.command()
def bootstrap(
    work_pool: Annotated[str, typer.Option(help="process work pool to create")] = "listingflow",
) -> None:
    """Idempotently create the work pool, global concurrency limits, Secret blocks and result storage."""
    from deployments.bootstrap import BootstrapError
    from deployments.bootstrap import bootstrap as do_bootstrap

    try:
        lines = asyncio.run(do_bootstrap(work_pool=work_pool))
    except BootstrapError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    for line in lines:
        console.print(line, soft_wrap=True, markup=False, highlight=False)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
