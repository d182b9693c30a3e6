#!/usr/bin/env python3
"""Launcher: `./talon.py server`, same as `python -m talon server`."""
import sys

from talon import cli

sys.exit(cli.main())
