"""``python -m bench.inprocess``: see the package's docstring."""

from bench.inprocess.run import main

main()
