"""The suites that ship with the harness (installed as `harness.suites`): `harness sweep NAME`
finds them by name, after any suite of that name in ./suites (harness.sweep.reading)."""
