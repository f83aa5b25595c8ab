"""Unlearning methods. Each module in this folder registers one method; adding one is one file."""
from __future__ import annotations

import importlib
import pkgutil

from .base import METHODS, Method, UnlearnContext, get_method, register, resolve_params, unlearn

_loaded = False


def load_all() -> None:
    """Import every module of this package so its ``@register`` runs."""
    global _loaded
    if _loaded:
        return
    for info in pkgutil.iter_modules(__path__):
        if info.name not in ("base", "common"):
            importlib.import_module(f"{__name__}.{info.name}")
    _loaded = True


def list_methods() -> list[type[Method]]:
    load_all()
    return [METHODS[k] for k in sorted(METHODS)]


__all__ = ["METHODS", "Method", "UnlearnContext", "get_method", "register", "resolve_params", "unlearn",
           "load_all", "list_methods"]
