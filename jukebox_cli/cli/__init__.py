"""The command line: parses options, calls the engine, renders results. No tensor maths here."""
