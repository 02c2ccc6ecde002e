"""Contract tests: each storage port's suite, run against every backend."""
