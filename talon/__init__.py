"""Talon: a response engine for Falco events."""

__version__ = "0.1.0"
