"""Figure output without pyplot: an object-oriented ``Figure`` rendered by the Agg canvas.

Why not ``pyplot``: it keeps global state and picks a GUI backend from the environment; a library
called from a notebook, a server or a test must not open windows or leak figures. Files are written
atomically, like every other result.
"""
from __future__ import annotations

import io
from pathlib import Path

from ..io import write_bytes


def save_figure(fig, path: str | Path, dpi: int = 120) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    path = Path(path)
    write_bytes(path, buf.getvalue())
    return path
