"""Backends of the core's storage ports: one subpackage per technology, one file per port.

Nothing here is imported by the core; :mod:`modelgate.boot` picks a backend from the settings and
imports only that one.
"""
