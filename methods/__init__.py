"""Continual-learning methods as plugins. Importing this package registers the built-in ones."""

from methods import avalanche, batche, ewc, hopsupsup, multihead, psp, separate, si, standard, supsup  # noqa: F401  (registration side effect)
from methods.base import METHODS, Method, register_method

__all__ = ["METHODS", "Method", "register_method"]
