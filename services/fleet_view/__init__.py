"""The fleet view: a read-only list of every site, from the central broker (issue 17)."""
