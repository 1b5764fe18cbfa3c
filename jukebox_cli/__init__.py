"""jukebox-cli: OpenAI Jukebox re-implemented in modern PyTorch, with a pleasant command line.

Importing this package must stay cheap: it must not import torch (``jukebox --help`` relies on it).
"""

__version__ = "0.1.0"
