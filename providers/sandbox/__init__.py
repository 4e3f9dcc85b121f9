"""Local servers that play each provider's test key; see ``core``."""
