"""Settings of the example: everything that varies comes from the
environment (DATABASE_URL, SNORKY_BACKEND_URL, SNORKY_API_KEY,
SNORKY_WEBSOCKET_URL)."""
import os
from pathlib import Path
from urllib.parse import unquote, urlparse

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = ["rest_framework", "tasks"]
MIDDLEWARE = []
ROOT_URLCONF = "todo.urls"
WSGI_APPLICATION = "todo.wsgi.application"
TEMPLATES = []


def database(url):
    """The DATABASES entry of a postgres:// URL."""
    u = urlparse(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(u.path.lstrip("/")),
        "USER": unquote(u.username or ""),
        "PASSWORD": unquote(u.password or ""),
        "HOST": u.hostname or "",
        "PORT": str(u.port or ""),
        # Django's development server runs each request on a new thread:
        # a connection per request (use a pooler or CONN_MAX_AGE with a
        # real WSGI server).
        "CONN_MAX_AGE": 0,
    }


DATABASES = {"default": database(os.environ.get("DATABASE_URL", "postgres://localhost/app"))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

REST_FRAMEWORK = {
    # The example has no users; a real application keeps its own.
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
}

# Snorky (snorky_django reads these).
SNORKY_BACKEND_URL = os.environ.get("SNORKY_BACKEND_URL", "http://127.0.0.1:5002/backend")
SNORKY_API_KEY = os.environ.get("SNORKY_API_KEY", "")
SNORKY_DATASYNC_SERVICE = "datasync_backend"
SNORKY_JSON_ENCODER = "rest_framework.utils.encoders.JSONEncoder"

# Where the page connects (served to it as /config.js), and the page's files
# (the TodoMVC example's, unchanged).
SNORKY_WEBSOCKET_URL = os.environ.get("SNORKY_WEBSOCKET_URL", "ws://127.0.0.1:5001/ws")
TODOMVC_STATIC_DIR = os.environ.get("TODOMVC_STATIC_DIR", str(BASE_DIR.parent / "todomvc" / "static"))

LOGGING = {
    "version": 1,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"snorky_django": {"handlers": ["console"], "level": "INFO"}},
}
