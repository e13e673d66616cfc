"""``splitbrain-hub serve``: the model behind an HTTP API and a web page (optional extra ``[serve]``).

- ``config.py``   the settings (limits, batching), as one dataclass
- ``uploads.py``  uploaded bytes -> a decoded image, defensively; results -> PNG / JPEG bytes
- ``batcher.py``  micro-batching: concurrent requests share one forward pass, off the event loop
- ``engine.py``   the loaded model and the operations (colorize, lightness, features) it runs on a batch
- ``errors.py``   the JSON error answers and their documented codes
- ``app.py``      the FastAPI app: routes, request guard (limits, drain), start-up and SIGTERM
- ``command.py``  the CLI subcommand: arguments, then uvicorn
- ``static/``     the web page at ``/`` (plain HTML, CSS and a script; no network beyond the server)

Importing this package imports neither FastAPI nor uvicorn; ``app.py`` does.
"""
