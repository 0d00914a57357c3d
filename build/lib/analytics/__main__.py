"""``python -m analytics`` runs the CLI."""

from analytics.cli import main

main()
