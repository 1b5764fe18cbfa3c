"""``jukebox studio``: a local web page for co-composition, on Gradio (the ``studio`` extra).

``actions.py`` is what the page does, in plain Python over the engine's workspace and job queue; ``chroma.py``
draws a take's chromagram; ``page.py`` lays out the page and wires its events to the actions; ``server.py``
starts it. Only ``page.py`` and ``server.py`` import gradio.
"""
