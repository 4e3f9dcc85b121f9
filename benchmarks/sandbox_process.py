"""The three sandboxes in a process of their own:
``python -m benchmarks.sandbox_process config.json out.json``.

Phase E's zero-latency sandboxes answer dozens of requests a second for the whole budget. Run as
threads of the orchestrator, they shared one GIL with the sandboxes of the rate-bound phases, which
count a request when they handle it: a request handled tens of milliseconds late made a window look
fuller than listingflow had sent it (a full run saw one 429 in ListingRVA and one in Pixii, at x5 and
x10 time scaling, where the 1% pacing margin is 0.12 s and 0.06 s of a window). In their own process
they take none of that time.

Writes the environment a run needs to reach them (``env``) and each one's root URL (``urls``: its
``/_sandbox/records`` is what ``harness.RemoteBox`` reads) to ``out.json`` and serves until its stdin
is closed; then adds the paid submissions each one recorded (``paid``) and exits.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from listingflow.local import running_sandboxes

from . import analysis as A
from .harness import provider_classes


def main() -> None:
    config = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    before = dict(os.environ)
    with running_sandboxes(provider_classes(), config_updates=config) as boxes:
        env = {k: v for k, v in os.environ.items() if before.get(k) != v}
        urls = {p: b.public_url for p, b in boxes.items()}
        out.write_text(json.dumps({"env": env, "urls": urls}))
        sys.stdin.read()  # until the orchestrator closes it
        paid = {p: len(A.paid_submissions(b)) for p, b in boxes.items()}
    out.write_text(json.dumps({"env": env, "urls": urls, "paid": paid}))


if __name__ == "__main__":
    main()
