"""The command line: parses options, calls the engine, renders results. No tensor maths here.

Each command module imports the engine inside its command functions (lazy imports), so that ``jukebox --help``
and the shell completion never import torch.
"""
