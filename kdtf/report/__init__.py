"""Deprecated: moved out of the library (see `kdtf._moved`)."""
from kdtf._moved import alias

alias(__name__)
