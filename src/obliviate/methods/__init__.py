"""Unlearning methods. Each module in this folder registers one method; adding one is one file."""
from __future__ import annotations

from .base import (
    METHODS,
    Method,
    MethodContext,
    UnlearnContext,
    get_method,
    list_methods,
    load_all,
    register,
    resolve_params,
    unlearn,
)

__all__ = ["METHODS", "Method", "MethodContext", "UnlearnContext", "get_method", "register", "resolve_params",
           "unlearn", "load_all", "list_methods"]
