"""``python -m obliviate``: the same CLI as the ``obliviate`` command, for environments without its script."""
from .cli.main import app

app(prog_name="obliviate")
