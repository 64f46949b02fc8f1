"""Hardware drivers of the master, each behind a small Protocol."""
