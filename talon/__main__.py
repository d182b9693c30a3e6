"""`python -m talon ...`: hand over to the command line interface."""

import sys

from talon import cli

sys.exit(cli.main())
