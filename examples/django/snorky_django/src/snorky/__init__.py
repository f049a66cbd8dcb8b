"""Import paths of the original Snorky's Python helpers (``snorky.backend.django``),
provided by the snorky-django package so that applications written for them
run unchanged. New code imports :mod:`snorky_django`."""
