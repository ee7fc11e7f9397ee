"""``python -m ridecast`` runs the CLI."""

from ridecast.cli import main

main()
