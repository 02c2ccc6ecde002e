"""The learning loop: a model retrained from its consented, labelled traffic, evaluated
against the version it would replace, registered with its lineage and rolled out as a
canary (docs/learning.md). ``runs.py`` holds the loop; one module per step."""
