"""Running listingflow as Prefect deployments: ``prefect.yaml`` at the repository root, the
idempotent ``listingflow bootstrap`` (:mod:`deployments.bootstrap`), the pull steps a worker runs
before each flow run (:mod:`deployments.steps`) and provider credentials from Secret blocks
(:mod:`deployments.credentials`). The runbook is ``deployments/README.md``.
"""
