"""Running: the service tick and run share, due occurrences, dispatch, receipts, callbacks, the daemon, status."""
