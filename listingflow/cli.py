"""The listingflow command: run, estimate, providers, unknown, sandbox, server, bootstrap."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup

from providers.contract import STEP_ORDER

HELP = "Generate listing copy, images, A+ content and variation images for a catalog, on Prefect."
console = Console()
err = Console(stderr=True, soft_wrap=True)


# typer's (vendored click's) UsageError: a bad or missing option; typer exports only its BadParameter subclass
_UsageError: Any = typer.BadParameter.__mro__[1]


def _command_path(ctx: Any) -> str:
    """``listingflow server status``, whatever name the program was started by (``python -m``, a test)."""
    names = []
    while ctx.parent is not None:
        names.append(ctx.info_name)
        ctx = ctx.parent
    return " ".join(["listingflow", *reversed(names)])


def _usage_error(ctx: Any, exc: Any, hint: str) -> NoReturn:
    """Bad usage in one line naming the command and what is wrong (not click's usage block), exit 2."""
    err.print(f"{_command_path(ctx)}: {exc.format_message()} {hint}", markup=False, highlight=False)
    raise typer.Exit(2) from None


class _OneLineGroup(TyperGroup):
    """An unknown command, or a bad option before it, in one line: the command's name (with typer's
    "Did you mean" when one is close) and the valid ones."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except _UsageError as exc:
            _usage_error(ctx, exc, "(--help lists the options)")

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except _UsageError as exc:
            names = [n for n in self.list_commands(ctx) if not self.commands[n].hidden]
            _usage_error(ctx, exc, f"Commands: {', '.join(names)} (--help describes them).")


# Plain help (no rich panels, no markup): it reads the same at 80 columns, piped, and in a log.
app = typer.Typer(
    cls=_OneLineGroup,
    add_completion=False,
    no_args_is_help=True,
    help=HELP,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


class _PlainHelpCommand(TyperCommand):
    """A bad option in one line (not a usage block), and help that lists an argument by its name (typer
    adds its Python type: ``CATALOG <str>``)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except _UsageError as exc:
            _usage_error(ctx, exc, "(--help lists the options)")

    def format_options(self, ctx: Any, formatter: Any) -> None:
        args, opts = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None and param.param_type_name == "argument":
                args.append((getattr(param, "display_name_raw", record[0]), record[1]))
            elif record is not None:
                opts.append(record)
        for title, rows in (("Arguments", args), ("Options", opts)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"listingflow {version('listingflow')}")
        except PackageNotFoundError:
            print("listingflow (not installed: no version)")
        raise typer.Exit()


@app.callback()
def _keep_prefect_files_local(
    show_version: Annotated[
        bool,
        typer.Option("--version", help="print the version and exit", is_eager=True, callback=_print_version),
    ] = False,
) -> None:
    """Prefect's local files (telemetry id, result storage, memo store) go under the listingflow state
    folder, not ~/.prefect, unless PREFECT_HOME is set; runs before any command imports Prefect."""
    from flows.settings import get_settings
    from listingflow.prefect_home import use_state_dir_for_prefect

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
            _fail_before_start(f"{what}: expected NAME=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _params(
    catalog: str,
    steps: list[str] | None,
    provider: list[str],
    styles: list[str],
    size: int | None,
    platform: str | None,
    aplus_types: list[str],
    scale_mode: str | None,
    language: str | None,
    products: list[str],
    archive: str | None,
    force: list[str],
    rerun_failed_of: str | None,
    max_credits: int | None,
    max_credits_for: list[str],
    price: list[str],
    resubmit_unknown: bool = False,
    regenerate_noncompliant: bool = False,
) -> Any:
    from pydantic import ValidationError

    from flows.params import RunParameters

    data: dict[str, Any] = {
        "catalog": catalog,
        "products": products,
        "archive": archive,
        "force": force,
        "rerun_failed_of": rerun_failed_of,
        "resubmit_unknown": resubmit_unknown,
        "regenerate_noncompliant": regenerate_noncompliant,
    }
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
    data["budget"] = {
        "max_credits": max_credits,
        "per_provider": {k: int(v) for k, v in _kv(max_credits_for, "--max-credits-for").items()},
    }
    data["price_per_credit"] = {k: float(v) for k, v in _kv(price, "--price").items()}
    try:
        return RunParameters.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'parameters'}: {e['msg']}" for e in exc.errors()
        )
        _fail_before_start(problems)


# Each option has a metavar: without one, typer's help shows the Python type (``<list[str]>``).
CatalogArg = Annotated[
    str, typer.Argument(metavar="CATALOG", help="CSV/JSON/JSONL catalog, local path or s3:// URI")
]
Steps = Annotated[
    list[str] | None,
    typer.Option("--step", "-s", metavar="STEP", help=f"step to run (repeat): {', '.join(STEP_ORDER)}"),
]
ProviderOpt = Annotated[
    list[str],
    typer.Option("--provider", "-p", metavar="STEP=PROVIDER", help="provider of a step, e.g. images=pixii"),
]
Styles = Annotated[list[str], typer.Option("--style", metavar="STYLE", help="image style id (repeat)")]
Size = Annotated[int | None, typer.Option(metavar="PX", help="image size in px: 1000, 1200, 1500 or 2000")]
Platform = Annotated[
    str | None, typer.Option(metavar="PLATFORM", help="target platform for copy and images, e.g. amazon")
]
APlus = Annotated[
    list[str],
    typer.Option(
        "--aplus-type", metavar="TYPE", help="'A+ Basic', 'A+ Premium' or 'A+ Premium Mobile' (repeat)"
    ),
]
ScaleMode = Annotated[
    str | None, typer.Option(metavar="MODE", help="scale mode: catalog, inspire, variation or language")
]
Language = Annotated[
    str | None, typer.Option(metavar="LANG", help="target language for scale mode 'language'")
]
Products = Annotated[list[str], typer.Option("--product", metavar="ASIN", help="only this ASIN (repeat)")]
ArchiveOpt = Annotated[
    str | None, typer.Option(metavar="FOLDER|S3URI", help="local folder or s3://bucket/prefix")
]
Force = Annotated[
    list[str], typer.Option("--force", metavar="STEP", help="regenerate this step; SPENDS CREDITS AGAIN")
]
Rerun = Annotated[
    str | None,
    typer.Option(
        metavar="RUN",
        help="only the failed products of this run id or manifest, with that run's parameters (options "
        "given here with a non-default value override them)",
    ),
]
MaxCredits = Annotated[
    int | None, typer.Option(metavar="N", help="stop submitting past this many credits in total")
]
MaxFor = Annotated[
    list[str],
    typer.Option(
        "--max-credits-for", metavar="PROVIDER=N", help="stop submitting to PROVIDER past N credits"
    ),
]
Price = Annotated[
    list[str],
    typer.Option("--price", metavar="PROVIDER=PRICE", help="money per credit, for the cost summary"),
]
ResubmitUnknown = Annotated[
    bool,
    typer.Option(
        "--resubmit-unknown", help="send again submissions held with an unknown outcome; MAY PAY TWICE"
    ),
]
Regenerate = Annotated[
    bool,
    typer.Option(
        "--regenerate-noncompliant",
        help="pay once more for a step whose output fails the marketplace's compliance rules, within the "
        "budget",
    ),
]


@app.command(cls=_PlainHelpCommand)
def run(
    catalog: CatalogArg,
    step: Steps = None,
    provider: ProviderOpt = [],
    style: Styles = [],
    size: Size = None,
    platform: Platform = None,
    aplus_type: APlus = [],
    scale_mode: ScaleMode = None,
    language: Language = None,
    product: Products = [],
    archive: ArchiveOpt = None,
    force: Force = [],
    rerun_failed_of: Rerun = None,
    max_credits: MaxCredits = None,
    max_credits_for: MaxFor = [],
    price: Price = [],
    resubmit_unknown: ResubmitUnknown = False,
    regenerate_noncompliant: Regenerate = False,
    sandbox: Annotated[
        bool, typer.Option(help="run against local sandboxes (no network, no real credits)")
    ] = False,
    sandbox_job_seconds: Annotated[float, typer.Option(metavar="SECONDS", help="sandbox job duration")] = 1.0,
    sandbox_noncompliant: Annotated[
        list[str],
        typer.Option(
            "--sandbox-noncompliant",
            metavar="ASIN",
            help="a product whose sandbox outputs break Amazon's rules on "
            "purpose (grey main image, promotional title), to try the compliance checks (repeat)",
        ),
    ] = [],
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="show Prefect's logs")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="show the traceback of a failure")] = False,
) -> None:
    """Run the pipeline over a catalog, locally (a Prefect server is started if none is configured)."""
    _quiet_prefect(verbose)
    params = _params(
        catalog,
        step,
        provider,
        style,
        size,
        platform,
        aplus_type,
        scale_mode,
        language,
        product,
        archive,
        force,
        rerun_failed_of,
        max_credits,
        max_credits_for,
        price,
        resubmit_unknown,
        regenerate_noncompliant,
    )
    if params.resubmit_unknown:
        err.print(
            "[yellow]--resubmit-unknown: submissions held with an unknown outcome are sent again; the "
            "provider may already have billed them, so this MAY PAY TWICE.[/yellow]"
        )
    if params.force:
        err.print(
            f"[yellow]--force {', '.join(params.force)}: these steps are regenerated and SPEND CREDITS "
            "AGAIN even where an earlier run already paid for them.[/yellow]"
        )
    if params.regenerate_noncompliant:
        err.print(
            "[yellow]--regenerate-noncompliant: a step whose output fails the compliance rules is paid "
            "for once more, within the budget.[/yellow]"
        )
    code = _run_sync(
        params,
        sandbox=sandbox,
        job_seconds=sandbox_job_seconds,
        verbose=verbose,
        debug=debug,
        noncompliant=sandbox_noncompliant,
    )
    raise typer.Exit(code)


def _fail_before_start(message: str) -> None:
    """Bad input: one line naming what is wrong, exit 2, nothing started."""
    err.print(f"listingflow: {message}", markup=False, highlight=False)
    raise typer.Exit(2)


def _report_failure(exc: BaseException, *, started: bool, debug: bool) -> int:
    """An unexpected failure in one line (exit 2 before the run started, 1 after); its traceback goes to
    a log file under the state folder, and to the screen with --debug."""
    import traceback

    log = _write_traceback(exc)
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    what = "the run failed" if started else "the run could not start"
    where = f"; traceback in {log}" if log else ""
    hint = "" if debug else " (--debug shows it)"
    message = " ".join(str(exc).split()) or "no message"
    err.print(
        f"listingflow: {what}: {type(exc).__name__}: {message}{where}{hint}", markup=False, highlight=False
    )
    return 1 if started else 2


def _write_traceback(exc: BaseException) -> Any:
    """The failure's traceback in ``<state folder>/logs/``; None when it cannot be written."""
    import traceback

    try:
        from flows.settings import get_settings

        folder = get_settings().state_dir / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        path.write_text("".join(traceback.format_exception(exc)))
        return path
    except Exception:  # noqa: BLE001 - the one line still says what failed
        return None


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

    def handle(self, signum: int, frame: Any) -> None:  # the signal module's signature
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
        console.print(
            f"[yellow]{self.name}: stopping - no new submissions; jobs in flight are kept for the next "
            "run. Press Ctrl-C again to exit at once.[/yellow]"
        )

    def exit_now(self) -> None:
        from listingflow.local import kill_local_servers

        kill_local_servers()
        if sys.stdout.isatty():
            sys.stdout.write("\x1b[?25h")  # the progress bar hides the cursor
        sys.stdout.write(
            "\nexited at once on a second signal: no run manifest written; jobs already "
            "submitted are cached and resume on the next run\n"
        )
        sys.stdout.flush()
        os._exit(self.exit_code)


def _mute_prefect_console() -> None:
    """Prefect logs every task run the stop ends as an error with its traceback: the person who pressed
    Ctrl-C gets one line from us instead (the logs still reach the Prefect UI)."""
    import logging

    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [
        logging.getLogger(),
        *(lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)),
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler):
                handler.setLevel(logging.CRITICAL)


def _run_sync(
    params: Any,
    *,
    sandbox: bool,
    job_seconds: float,
    verbose: bool = False,
    debug: bool = False,
    noncompliant: list[str] | None = None,
) -> int:
    from listingflow.terminal import make_board

    stopper = _StopOnSignals(mute_prefect=not verbose)
    stopper.install()
    # the handlers stay after the run: a second Ctrl-C while the command drains Prefect's logs still exits
    board = make_board(console, bind_stop=stopper.attach)
    try:
        code = _run_local(
            params,
            board,
            sandbox=sandbox,
            job_seconds=job_seconds,
            verbose=verbose,
            noncompliant=noncompliant or [],
        )
    except KeyboardInterrupt:
        board.close()
        if stopper.signum is None:
            raise
        err.print(
            f"{stopper.name}: stopped before any product was started; nothing was submitted", style="yellow"
        )
        return stopper.exit_code
    except Exception as exc:  # noqa: BLE001 - one line, the traceback in a log file
        board.close()
        return _report_failure(exc, started=board.started, debug=debug)
    return stopper.exit_code if stopper.signum else code


def _run_local(
    params: Any, board: Any, *, sandbox: bool, job_seconds: float, verbose: bool, noncompliant: list[str]
) -> int:
    from contextlib import ExitStack

    from flows.settings import get_settings, reset_settings
    from listingflow.local import configured_api_url, discard_sandbox_state, local_prefect_server
    from listingflow.report import print_summary
    from listingflow.server import running_server

    with ExitStack() as stack:
        stack.callback(board.close)
        if sandbox:
            board.phase("starting the sandboxes...")
            _start_sandboxes(stack, params, job_seconds, board, noncompliant)
        board.phase("connecting to Prefect...")
        reset_settings()
        settings = get_settings()
        if sandbox:  # these sandboxes' jobs end with this command: so does what was cached about them
            stack.callback(discard_sandbox_state, settings.sandbox_dir)
        if not configured_api_url() and running_server(settings.state_dir) is None:
            board.phase(
                "starting the local Prefect server (later runs reuse it; listingflow server stop stops it)..."
            )
        api = stack.enter_context(local_prefect_server(settings.state_dir))
        board.note(f"Prefect API: {api}")
        board.phase("starting the flow run: pre-flight checks...")
        import flows.catalog_flow  # noqa: F401 - Prefect sets up its logging on import: mute it after

        if not verbose:
            _mute_prefect_console()  # the flow run's failure is reported here once, in one line
        started = time.monotonic()
        summary = asyncio.run(_run_flow(params, board))
        board.close()
    if summary.refused:  # one line; several problems, one line each under a header
        head = "run refused, nothing was submitted:"
        lines = [f"{head} {summary.refused[0]}"] if len(summary.refused) == 1 else [head, *summary.refused]
        for line in lines:
            err.print(line if line.startswith(head) else f"  {line}", markup=False, highlight=False)
        return 2
    print_summary(console, summary, time.monotonic() - started)
    return 0 if summary.ok else 1


def _start_sandboxes(
    stack: Any, params: Any, job_seconds: float, board: Any, noncompliant: list[str]
) -> None:
    from flows.settings import get_settings
    from listingflow.local import noncompliant_products, running_sandboxes
    from providers.registry import load_providers

    registry = load_providers()
    names = {params.providers.for_step(s) for s in params.ordered_steps()}
    updates: dict[str, dict[str, Any]] = {}
    if noncompliant:  # the sandboxes' outputs for these products break the marketplace's rules
        tokens = noncompliant_products(
            params.catalog, noncompliant, s3_endpoint_url=get_settings().s3_endpoint_url
        )
        updates = {n: {"noncompliant_asins": tokens} for n in names}
    stack.enter_context(
        running_sandboxes(
            {n: registry.get(n) for n in names}, job_seconds=job_seconds, config_updates=updates
        )
    )
    for n in names:  # sandbox jobs take seconds, not minutes: poll at a matching cadence
        prefix = registry.get(n).settings_class.model_config.get("env_prefix", f"{n.upper()}_")
        os.environ.setdefault(f"{prefix}POLL_INTERVAL_SECONDS", str(max(0.2, job_seconds / 2)))
    board.note(f"sandboxes on loopback: {', '.join(sorted(names))}")


async def _run_flow(params: Any, board: Any) -> Any:
    """The flow run's summary (its result); a crashed flow run's exception is raised here."""
    from flows.catalog_flow import observed_catalog_flow
    from flows.summary import RunSummary

    state = await observed_catalog_flow(params, board)
    result = await state.aresult(raise_on_failure=False)
    if isinstance(result, BaseException):
        raise result
    if not isinstance(result, RunSummary):
        raise RuntimeError(f"the flow run ended {state.name} without a summary: {state.message}")
    return result


@app.command(cls=_PlainHelpCommand)
def estimate(
    catalog: CatalogArg,
    step: Steps = None,
    provider: ProviderOpt = [],
    style: Styles = [],
    size: Size = None,
    platform: Platform = None,
    aplus_type: APlus = [],
    scale_mode: ScaleMode = None,
    language: Language = None,
    product: Products = [],
    archive: ArchiveOpt = None,
    force: Force = [],
    balances: Annotated[bool, typer.Option(help="read current balances from the providers")] = True,
) -> None:
    """Expected credits per provider and step, from published prices. Spends nothing."""
    params = _params(
        catalog,
        step,
        provider,
        style,
        size,
        platform,
        aplus_type,
        scale_mode,
        language,
        product,
        archive,
        force,
        None,
        None,
        [],
        [],
    )
    asyncio.run(_estimate(params, balances))


async def _estimate(params: Any, balances: bool) -> None:
    import httpx

    from flows.archive import SpooledArchive, open_archive, product_manifest_key
    from flows.catalog import CatalogError, load_catalog
    from flows.estimate import estimate_run
    from flows.selection import select_products
    from flows.settings import get_settings
    from providers.registry import load_providers

    settings = get_settings()
    try:
        catalog = load_catalog(params.catalog, s3_endpoint_url=settings.s3_endpoint_url)
    except CatalogError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    registry = load_providers(allow=settings.providers)
    names = sorted({params.providers.for_step(s) for s in params.ordered_steps()})
    products, notes = select_products(params, catalog)  # the run's own selection rules
    for note in notes:
        err.print(f"note: {note}", markup=False, highlight=False)
    archive = SpooledArchive(
        open_archive(params.archive or settings.archive, endpoint_url=settings.s3_endpoint_url),
        settings.spool_path,
    )
    manifests = {
        p.key: await archive.get_json(product_manifest_key(archive.prefix, p.country_code, p.asin))
        for p in products
    }
    async with httpx.AsyncClient() as http:
        providers = {n: registry.get(n)(http) for n in names}
        est = estimate_run(params, products, providers, manifests)
        _print_estimate(est, len(products))
        for problem in est.invalid:
            _say(f"not counted: {problem}", "yellow")
        for r in catalog.rejected:
            _say(f"rejected row: {r}", "yellow")
        if balances:
            for n in names:
                try:
                    bal = await providers[n].balance()
                    shown = "no balance endpoint" if bal is None else str(bal)
                except Exception as exc:  # noqa: BLE001 - an unreachable provider is reported, not fatal
                    shown = f"unavailable ({type(exc).__name__})"
                _say(
                    f"balance {n}: {shown}; this run needs {est.credits_for(n)}"
                    + (f" + {est.unknown_for(n)} job(s) of unknown price" if est.unknown_for(n) else "")
                )


def _print_estimate(est: Any, products: int) -> None:
    """Per provider and step, then the total; the unknown-price and already-done columns only when a
    line has some (so the table fits 80 columns; narrower, one line per row)."""
    from listingflow.tables import Row, print_figures

    fields = {  # column: EstimateLine field
        "jobs": "jobs",
        "credits": "credits",
        "unknown-price jobs": "unknown_jobs",
        "already done": "already_done",
    }
    names = [
        n for n, f in fields.items() if n in ("jobs", "credits") or any(getattr(ln, f) for ln in est.lines)
    ]
    rows = [Row([ln.provider, ln.step, *(str(getattr(ln, fields[n])) for n in names)]) for ln in est.lines]
    totals = [str(sum(getattr(ln, fields[n]) for ln in est.lines)) for n in names]
    rows.append(Row(["total", "", *totals], bold=True))
    headers = [("provider", False), ("step", False), *((n, True) for n in names)]
    print_figures(console, f"Estimate for {products} products (nothing is spent)", headers, rows)


def _say(text: str, style: str | None = None) -> None:
    from listingflow.report import line_printer

    line_printer(console)(text, style)


@app.command(cls=_PlainHelpCommand)
def providers(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List installed provider plugins with their capabilities, limits and prices."""
    from flows.settings import get_settings
    from providers.registry import load_providers

    settings = get_settings()
    registry = load_providers(allow=settings.providers, strict=settings.strict_plugins)
    if as_json:
        out: dict[str, Any] = {
            n: {
                "capabilities": sorted(p.capabilities),
                "api_version": p.api_version,
                "limits": p.limits.model_dump(mode="json"),
                "prices": [x.model_dump(mode="json") for x in p.prices],
            }
            for n, p in registry.providers.items()
        }
        out["_failed"] = registry.failures
        console.print_json(json.dumps(out))
        return
    for name, p in sorted(registry.providers.items()):
        console.print(f"[bold]{name}[/bold] ({p.display_name}, contract {p.api_version})")
        steps = [s for s in ("copy", "images", "aplus", "scale") if s in p.capabilities]
        console.print(f"  capabilities: {', '.join(steps)}")
        limits = ", ".join(f"{g.group} {g.requests}/{g.per_seconds:g}s" for g in p.limits.route_groups)
        daily = (
            f"; {p.limits.daily_requests}/day ({p.limits.daily_counts})" if p.limits.daily_requests else ""
        )
        console.print(
            f"  limits: {limits}{daily}; in flight {p.limits.max_inflight_jobs}; "
            f"batch {p.limits.max_batch_size}"
        )
        prices = ", ".join(
            f"{x.step}:{x.item}={'unknown' if x.credits is None else x.credits}" for x in p.prices
        )
        console.print(f"  prices (credits): {prices}")
    for name, reason in registry.failures.items():
        err.print(f"[yellow]skipped {name}: {reason}[/yellow]")


@app.command(cls=_PlainHelpCommand)
def unknown(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List held submissions: paid requests whose outcome a run could not establish (never resent
    unless a run is given --resubmit-unknown), and those charged whose output cannot be retrieved."""
    from flows.held import HeldStore
    from flows.settings import get_settings

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
    console.print(
        f"{len(records)} held, up to {possible} credits. Check the provider's dashboard; "
        "`listingflow run ... --resubmit-unknown` sends the unknown ones again (MAY PAY TWICE)."
    )


@app.command(cls=_PlainHelpCommand)
def sandbox(
    port: Annotated[list[str], typer.Option(metavar="PROVIDER=PORT", help="a sandbox's port")] = [],
    job_seconds: Annotated[float, typer.Option(metavar="SECONDS", help="job duration")] = 2.0,
) -> None:
    """Start every provider's sandbox on loopback until Ctrl-C; prints the env to point runs at them."""
    from flows.settings import Settings
    from listingflow.local import (
        discard_sandbox_state,
        new_sandbox_instance,
        running_sandboxes,
        sandbox_base_url,
    )
    from providers.registry import load_providers

    registry = load_providers()
    ports = {k: int(v) for k, v in _kv(port, "--port").items()}
    instance = new_sandbox_instance()
    with running_sandboxes(
        dict(registry.providers), job_seconds=job_seconds, ports=ports, set_env=False
    ) as boxes:
        for name, box in boxes.items():
            p = registry.get(name)
            prefix = p.settings_class.model_config.get("env_prefix", f"{name.upper()}_")
            # plain print: rich wraps long lines at the terminal width, which breaks copy-paste
            print(
                f"export {prefix}BASE_URL={sandbox_base_url(p, box)} {prefix}API_KEY={p.sandbox_key}",
                flush=True,
            )
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


server_app = typer.Typer(
    cls=_OneLineGroup,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="The local Prefect server that "
    "listingflow run starts in the background when PREFECT_API_URL is not set.",
)
app.add_typer(server_app, name="server")


@server_app.command("status", cls=_PlainHelpCommand)
def server_status() -> None:
    """Whether the local Prefect server for this state dir (.listingflow/) is running, and where."""
    from flows.settings import get_settings
    from listingflow.local import configured_api_url
    from listingflow.server import running_server

    if configured_api_url():
        console.print(
            f"PREFECT_API_URL is set ({os.environ.get('PREFECT_API_URL', 'in the Prefect profile')}): "
            "runs use that server, not a local one",
            soft_wrap=True,
        )
    record = running_server(get_settings().state_dir)
    if record is None:
        console.print("local Prefect server: not running (the next `listingflow run` starts it)")
        raise typer.Exit(1)
    console.print(
        f"local Prefect server: running at {record.url} (pid {record.pid}, up "
        f"{time.time() - record.started_at:.0f}s, log {record.log})",
        soft_wrap=True,
    )


@server_app.command("stop", cls=_PlainHelpCommand)
def server_stop() -> None:
    """Stop the local Prefect server (run history, limits and cached submissions stay on disk)."""
    from flows.settings import get_settings
    from listingflow.server import stop_server

    record = stop_server(get_settings().state_dir)
    console.print("local Prefect server: " + (f"stopped (pid {record.pid})" if record else "was not running"))


@app.command(cls=_PlainHelpCommand)
def bootstrap(
    work_pool: Annotated[
        str, typer.Option(metavar="NAME", help="process work pool to create")
    ] = "listingflow",
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
