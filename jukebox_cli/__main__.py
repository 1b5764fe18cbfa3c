"""``python -m jukebox_cli`` runs the command line."""

from jukebox_cli.cli.app import main

main()
