"""Inbound protocol adapters. They translate and decide nothing: every one calls the core."""
