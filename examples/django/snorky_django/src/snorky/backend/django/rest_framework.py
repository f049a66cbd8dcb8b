"""The original helpers' module path; see :mod:`snorky_django.rest_framework`."""
from snorky_django.rest_framework import (  # noqa: F401
    ListSubscribeAPIView,
    ListSubscribeCreateAPIView,
    ListSubscribeModelMixin,
    SubscribeModelMixin,
    subscription_in_response,
)
