"""listingflow: the command line and settings around the Prefect pipeline."""
