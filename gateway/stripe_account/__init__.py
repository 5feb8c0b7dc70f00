"""Stripe account operations: the webhook endpoint pinned to our API version (`endpoint.py`), events counted by
API version (`versions.py`), the missed-webhook watchdog (`watchdog.py`), resync of single objects (`resync.py`) and
their `gateway stripe ...` commands (`commands.py`)."""
