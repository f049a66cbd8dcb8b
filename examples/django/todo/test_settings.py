"""The example's settings plus the test-only items API (itemsapp), used by
django_test.go."""
from .settings import *  # noqa: F401,F403
from .settings import INSTALLED_APPS

INSTALLED_APPS = INSTALLED_APPS + ["itemsapp"]
ROOT_URLCONF = "todo.test_urls"
