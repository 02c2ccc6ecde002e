"""The learning loop: a model retrained from its consented, labelled traffic, evaluated
against the version it would replace, registered with its lineage and rolled out as a
canary (docs/learning.md). ``runs.py`` holds the loop's runs, ``run_steps.py`` a run's
steps in order and ``triggers.py`` when a run starts by itself; one module per step."""
