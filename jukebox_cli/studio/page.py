"""The studio page: its layout, and its events wired to ``actions.Studio``.

The page keeps no state of its own that matters: runs are folders, favourites are files in them, and jobs
are in the engine's queue, so a reload (or another browser) shows the same thing. A one-second timer asks the
server how the queue and the chosen run stand; players are redrawn only when the run's files change, so a
take keeps playing while the page polls.

Endpoints a script can call with ``gradio_client`` (``api_name``): ``/generate``, ``/extend``, ``/upsample``,
``/favourite``, ``/job_status``, ``/runs``, ``/labels``. Errors come back as the CLI's one-line message.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import gradio as gr

from jukebox_cli.cli._errors import one_line
from jukebox_cli.studio.actions import MAX_TAKES, Studio

CSS = ".take { min-width: 320px; } footer { display: none !important; }"


def _shown(fn: Callable) -> Callable:
    """``fn`` with any error turned into the page's error toast, worded as the CLI words it (never a
    traceback: gradio would otherwise show "Error" alone, or leak the exception's repr)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as err:
            raise gr.Error(one_line(err), print_exception=False) from None

    return wrapper


def build_page(studio: Studio, *, default_model: str, header: str) -> gr.Blocks:
    """The page over ``studio``; ``header`` says where the runs are and what device samples."""
    models = studio.models.offered
    with gr.Blocks(title="Jukebox studio") as page:
        gr.Markdown(f"# Jukebox studio\n{header}")
        with gr.Row():
            with gr.Column(scale=1):
                gr.Markdown("### New top-level takes")
                model = gr.Dropdown(models, value=default_model, label="Model", allow_custom_value=True)
                genre = gr.Dropdown(label="Genre", allow_custom_value=True)
                artist_search = gr.Textbox(label="Search artists", placeholder="e.g. beatles")
                artist = gr.Dropdown(label="Artist", allow_custom_value=True)
                lyrics = gr.Textbox(label="Lyrics", lines=4, visible=False)
                with gr.Row():
                    duration = gr.Number(4.0, label="Duration (s)")
                    takes = gr.Slider(1, MAX_TAKES, value=3, step=1, label="Takes")
                with gr.Row():
                    seed = gr.Number(0, label="Seed", precision=0)
                    temperature = gr.Number(0.99, label="Temperature", step=0.01)
                generate = gr.Button("Generate takes", variant="primary", elem_id="generate")
            with gr.Column(scale=1):
                gr.Markdown("### Queue (one job at a time)")
                queue = gr.Markdown("No jobs yet.", elem_id="queue")
                submitted = gr.Textbox(label="Last request's run", interactive=False, elem_id="submitted")
        gr.Markdown("### Runs")
        with gr.Row():
            run = gr.Dropdown(label="Run", allow_custom_value=True, scale=3, elem_id="run")
        run_info = gr.Markdown()
        with gr.Row():
            extend_take = gr.Dropdown(label="Take to extend", allow_custom_value=True, scale=1)
            extend_to = gr.Number(8.0, label="Extend to (s)", scale=1)
            extend = gr.Button("Extend take", scale=1)
            upsample = gr.Button("Upsample favourites", scale=1)
        slots = []
        for _row in range(MAX_TAKES // 2):
            with gr.Row():
                for _ in range(2):
                    with gr.Column(visible=False, elem_classes="take") as box:
                        title = gr.Markdown()
                        player = gr.Audio(type="filepath", interactive=False, show_label=False,
                                          buttons=["download"], elem_classes="take-audio")  # fmt: skip
                        image = gr.Image(type="filepath", format="png", interactive=False, show_label=False,
                                         buttons=["download"], height=200)  # fmt: skip
                        favourite = gr.Checkbox(label="favourite", elem_classes="favourite")
                    slots.append((box, title, player, image, favourite))
        with gr.Accordion("Run settings", open=False):
            settings = gr.JSON(label="run.json settings")
        shown = gr.State(None)  # the signature of what the players show
        listed = gr.State(None)  # the run names the dropdown offers
        timer = gr.Timer(1.0)

        # -- model and labels --------------------------------------------------------------------------

        @_shown
        def choose_model(name: str):
            genres = studio.labels(name, "genres")
            artists = studio.labels(name, "artists")
            return (
                gr.update(choices=genres, value="unknown" if "unknown" in genres else genres[0]),
                gr.update(choices=artists, value="unknown" if "unknown" in artists else artists[0]),
                gr.update(visible=studio.takes_lyrics(name)),
            )

        @_shown
        def search_artists(name: str, text: str):
            found = studio.labels(name, "artists", text)
            return gr.update(choices=found, value=found[0] if found else None)

        model.change(choose_model, model, [genre, artist, lyrics], api_visibility="private")
        artist_search.submit(search_artists, [model, artist_search], artist, api_visibility="private")
        page.load(choose_model, model, [genre, artist, lyrics], api_visibility="private")

        # -- requests ----------------------------------------------------------------------------------

        def chosen(job):
            """The run the job writes (plain text, for scripts too) and the queue as it is now."""
            return job.task.run, studio.queue_markdown()

        @_shown
        def on_generate(model, artist, genre, lyrics, duration, takes, seed, temperature):
            return chosen(studio.generate(model, artist, genre, lyrics, duration, takes, seed, temperature))

        @_shown
        def on_extend(run, take, duration, seed, temperature):
            if take is None or take == "":
                raise gr.Error("Choose the take to extend.", print_exception=False)
            return chosen(studio.extend(run, int(take), duration, seed, temperature))

        @_shown
        def on_upsample(run, seed, temperature):
            return chosen(studio.upsample(run, seed, temperature))

        generate.click(on_generate, [model, artist, genre, lyrics, duration, takes, seed, temperature],
                       [submitted, queue], api_name="generate")  # fmt: skip
        extend.click(on_extend, [run, extend_take, extend_to, seed, temperature], [submitted, queue],
                     api_name="extend")  # fmt: skip
        upsample.click(on_upsample, [run, seed, temperature], [submitted, queue], api_name="upsample")

        for take, (*_, favourite) in enumerate(slots):
            favourite.input(_shown(functools.partial(_favourite, studio, take)), [run, favourite], None,
                            api_visibility="private")  # fmt: skip

        # -- the view ----------------------------------------------------------------------------------

        @_shown
        def refresh(name, signature, offered, force=False):
            """Queue, run list, and the chosen run's players (each only when it changed: a dropdown a user has
            open, or a take that plays, is left alone)."""
            names = studio.run_names()
            name = name if name in names else (names[0] if names else None)
            same = names == offered and not force
            run_update = gr.skip() if same else gr.update(choices=names, value=name)
            view = studio.view(name) if name else None
            outputs = [studio.queue_markdown(), run_update, names]
            if view is None:
                status = studio.job_status(name) if name and name in studio.queue.reserved() else None
                info = (
                    f"**{name}** — waiting for its job (#{status['job']}, {status['state']})"
                    if status
                    else ""
                )
                return [*outputs, info, None, (name, None), gr.update(choices=[]),
                        *[gr.update(visible=False) if i % 5 == 0 else gr.skip() for i in range(5 * MAX_TAKES)]]  # fmt: skip
            if view.signature == signature and not force:
                return [
                    *outputs,
                    view.describe(),
                    gr.skip(),
                    signature,
                    gr.skip(),
                    *[gr.skip()] * (5 * MAX_TAKES),
                ]
            slot_updates = []
            for index in range(MAX_TAKES):
                take = next((t for t in view.takes if t.take == index), None)
                if take is None:
                    slot_updates += [gr.update(visible=False), "", None, None, False]
                else:
                    slot_updates += [gr.update(visible=True),
                                     f"**take {take.take}** · level {take.level} · {take.labels}",
                                     str(take.audio), str(take.chromagram), take.favourite]  # fmt: skip
            take_choices = [str(t) for t in range(view.summary.samples)]
            return [*outputs, view.describe(), view.summary.settings, view.signature,
                    gr.update(choices=take_choices, value=take_choices[0] if take_choices else None),
                    *slot_updates]  # fmt: skip

        view_outputs = [queue, run, listed, run_info, settings, shown, extend_take,
                        *[c for slot in slots for c in slot]]  # fmt: skip
        timer.tick(
            refresh, [run, shown, listed], view_outputs, api_visibility="private", show_progress="hidden"
        )
        run.input(lambda name, signature, offered: refresh(name, signature, offered, True), [run, shown, listed],
                  view_outputs,
                  api_visibility="private")  # fmt: skip
        page.load(lambda name, signature, offered: refresh(name, signature, offered, True), [run, shown, listed],
                  view_outputs,
                  api_visibility="private")  # fmt: skip

        # After a request the page shows its run (the players appear when its job has written them).
        submitted.change(lambda name: gr.update(choices=studio.run_names(), value=name), submitted, run,
                         api_visibility="private").then(
            lambda name, signature, offered: refresh(name, signature, offered, True), [run, shown, listed],
                  view_outputs,
            api_visibility="private")  # fmt: skip

        # -- for scripts (gradio_client) -----------------------------------------------------------------

        def job_status(run: str) -> dict:
            """The latest job writing ``run``: state, place in the queue (0: running), progress, message."""
            return studio.job_status(run)

        def favourite_api(run: str, take: int, favourite: bool) -> list[int]:
            """Mark (or unmark) a take of a run as a favourite; returns the run's favourites."""
            return studio.favourite(run, int(take), bool(favourite))

        def runs() -> list[str]:
            """Every run in the runs folder, newest first."""
            return studio.run_names()

        def labels(model: str, kind: str, search: str) -> list[str]:
            """A model's artists or genres (kind) containing ``search``."""
            return studio.labels(model, kind, search)

        gr.api(_shown(job_status), api_name="job_status")
        gr.api(_shown(favourite_api), api_name="favourite")
        gr.api(_shown(runs), api_name="runs")
        gr.api(_shown(labels), api_name="labels")
    return page


def _favourite(studio: Studio, take: int, run: str, favourite: bool) -> None:
    studio.favourite(run, take, favourite)
