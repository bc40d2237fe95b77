"""``python -m negotiator``."""

from negotiator.cli import app

app()
