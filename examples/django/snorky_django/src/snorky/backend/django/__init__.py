"""The original helpers' module path; see :mod:`snorky_django`."""
from snorky_django import (  # noqa: F401
    SnorkyError,
    authorize_identity,
    authorize_subscription,
    current_snapshot,
    disconnect_identity,
    publish,
    publish_deltas,
    subscribable,
)
