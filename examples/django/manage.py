#!/usr/bin/env python3
"""The Django + DRF tasks API of Snorky's examples (see README.md)."""
import os
import sys

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    # The helpers, used from this checkout (pip install ./snorky_django
    # does the same for an application of your own).
    sys.path.insert(0, os.path.join(here, "snorky_django", "src"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "todo.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
