"""See :mod:`snorky_django`."""
from snorky_django import SnorkyError  # noqa: F401
