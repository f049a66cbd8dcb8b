"""Django helpers for the Snorky real-time sync server.

The calls a Django application makes to Snorky's private backend endpoint
(one HTTP POST of a Snorky envelope each, with the ``X-Backend-Key``
header)::

    authorize_subscription(items, snapshot=None)  -> token
    authorize_identity(identity, ttl=None)        -> identity token
    disconnect_identity(identity)                 -> connections closed
    publish_deltas(deltas)
    publish(channel, message)

and :func:`current_snapshot`, the text of ``pg_current_snapshot()`` of the
current REPEATABLE READ transaction, for a subscription that receives
exactly the changes a query did not see (the Django REST Framework mixins of
:mod:`snorky_django.rest_framework` do this for list views).

Settings (read at each call, so tests may override them):

``SNORKY_BACKEND_URL``
    required; the backend endpoint, e.g. ``http://127.0.0.1:5002/backend``.
``SNORKY_API_KEY``
    required; the server's ``backend.api_key``.
``SNORKY_DATASYNC_SERVICE``
    default ``"datasync_backend"``.
``SNORKY_JSON_ENCODER``
    a JSON encoder class or its dotted path (default
    ``django.core.serializers.json.DjangoJSONEncoder``), e.g.
    ``"rest_framework.utils.encoders.JSONEncoder"``.
``SNORKY_PUBSUB_SERVICE``, ``SNORKY_IDENTITY_SERVICE``
    defaults ``"pubsub_backend"`` and ``"identity_backend"``.
``SNORKY_TIMEOUT``
    seconds per call, default 10.

**No model decorator is needed.** When Snorky reads your tables from
PostgreSQL (logical replication), every committed INSERT, UPDATE, DELETE and
TRUNCATE reaches the subscribers, whatever wrote it: the ORM, raw SQL, a
migration or another program. :func:`subscribable`, the original helpers'
model decorator, is kept only so that old code imports; it does nothing.
Use :func:`publish_deltas` only for data that does not live in those tables,
and after the transaction commits (``transaction.on_commit``).
"""

import json
import urllib.error
import urllib.request
import warnings

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

__all__ = [
    "SnorkyError",
    "authorize_subscription",
    "authorize_identity",
    "disconnect_identity",
    "publish_deltas",
    "publish",
    "call",
    "current_snapshot",
    "subscribable",
]


class SnorkyError(RuntimeError):
    """A failed backend call.

    ``message`` is the server's error string for an error reply (for
    example ``"Snapshot too old"``, ``"No such dealer"``), else a
    description of the transport failure; ``status`` the HTTP status, if
    any. It is a RuntimeError whose text starts with "Error from Snorky
    server: ", as the original helpers raised.
    """

    def __init__(self, message, status=None, reply=False):
        super().__init__("Error from Snorky server: %s" % message)
        self.message = message
        self.status = status
        #: True when the server answered with an error reply.
        self.reply = reply


def _setting(name, default=None, required=False):
    value = getattr(settings, name, default)
    if required and not value:
        raise ImproperlyConfigured(
            "%s is not set: add it to your Django settings (see the snorky_django documentation)" % name)
    return value


def _encoder():
    enc = _setting("SNORKY_JSON_ENCODER", "django.core.serializers.json.DjangoJSONEncoder")
    if isinstance(enc, str):
        from django.utils.module_loading import import_string
        enc = import_string(enc)
    return enc


def call(service, command, **params):
    """Send ``command`` with ``params`` to ``service`` and return the
    response's data. Raises :class:`SnorkyError`."""
    url = _setting("SNORKY_BACKEND_URL", required=True)
    key = _setting("SNORKY_API_KEY", required=True)
    body = json.dumps({"service": service, "message": {"command": command, "params": params}},
                      cls=_encoder()).encode("utf-8")
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json",
        "X-Backend-Key": key,
    })
    what = "%s.%s" % (service, command)
    try:
        with urllib.request.urlopen(req, timeout=_setting("SNORKY_TIMEOUT", 10)) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as e:
        detail = e.read().decode("utf-8", "replace").strip()
        hint = ""
        if e.code == 401:
            hint = " (SNORKY_API_KEY differs from the server's backend.api_key)"
        raise SnorkyError("%s: HTTP %d%s: %s" % (what, e.code, hint, detail), status=e.code) from None
    except (urllib.error.URLError, OSError) as e:
        raise SnorkyError("%s: cannot reach %s: %s" % (what, url, getattr(e, "reason", e))) from None
    try:
        message = json.loads(raw.decode("utf-8"))["message"]
        kind = message["type"]
    except (ValueError, KeyError, TypeError):
        raise SnorkyError("%s: malformed reply %r" % (what, raw[:200])) from None
    if kind == "error":
        raise SnorkyError(message.get("message"), status=200, reply=True)
    if kind != "response":
        raise SnorkyError("%s: unexpected reply %r" % (what, raw[:200]))
    return message.get("data")


def _datasync():
    return _setting("SNORKY_DATASYNC_SERVICE", "datasync_backend")


def authorize_subscription(items, snapshot=None):
    """Authorize a subscription to ``items`` and return its token.

    :param items: a list of ``{"dealer": name, "query": value}``.
    :param snapshot: the text of ``pg_current_snapshot()`` taken in the
        REPEATABLE READ transaction of the query whose result the client
        starts from (see :func:`current_snapshot`); the subscription then
        receives exactly the changes that query did not see. Without it,
        call this *before* running the query (changes in the result may
        then arrive again as deltas).
    """
    params = {"items": list(items)}
    if snapshot is not None:
        params["snapshot"] = snapshot
    return call(_datasync(), "authorizeSubscription", **params)


def publish_deltas(deltas):
    """Route ``deltas`` (a list of ``{"type", "model", "data"}`` or, for
    updates, ``{"type", "model", "newData", "oldData"}``) through the
    model's dealers. Tables Snorky reads from PostgreSQL need no call."""
    call(_datasync(), "publishDeltas", deltas=list(deltas))


def publish(channel, message):
    """Publish ``message`` to the PubSub subscribers of ``channel``."""
    call(_setting("SNORKY_PUBSUB_SERVICE", "pubsub_backend"), "publish", channel=channel, message=message)


def authorize_identity(identity, ttl=None):
    """Return an identity token for ``identity`` (any JSON value but None)
    for Chat and Cursors. The page passes it as the ``token`` query
    parameter of the WebSocket URL. ``ttl`` is in seconds (default: the
    server's ``tokens.identity_ttl``)."""
    if identity is None:
        raise ValueError("authorize_identity: identity must not be None")
    params = {"identity": identity}
    if ttl is not None:
        params["ttl"] = ttl
    return call(_setting("SNORKY_IDENTITY_SERVICE", "identity_backend"), "authorizeIdentity", **params)


def disconnect_identity(identity):
    """Close every connection of ``identity``; returns how many."""
    return call(_setting("SNORKY_IDENTITY_SERVICE", "identity_backend"), "disconnectIdentity", identity=identity)


def current_snapshot(using="default"):
    """Return ``pg_current_snapshot()`` of the current transaction of
    database ``using``, which must be PostgreSQL, inside ``atomic()`` and
    REPEATABLE READ or SERIALIZABLE (so it is the snapshot its queries
    see). Raises ImproperlyConfigured otherwise."""
    conn = connections[using]
    if conn.vendor != "postgresql":
        raise ImproperlyConfigured("current_snapshot: database %r is %s, not PostgreSQL" % (using, conn.vendor))
    if not conn.in_atomic_block:
        raise ImproperlyConfigured("current_snapshot: call it inside transaction.atomic()")
    with conn.cursor() as cur:
        cur.execute("SELECT pg_current_snapshot()::text, current_setting('transaction_isolation')")
        snapshot, isolation = cur.fetchone()
    if isolation not in ("repeatable read", "serializable"):
        raise ImproperlyConfigured(
            "current_snapshot: the transaction is %s; run the query and the snapshot in one "
            "REPEATABLE READ transaction (SET TRANSACTION ISOLATION LEVEL REPEATABLE READ "
            "as its first statement)" % isolation.upper())
    return snapshot


def subscribable(model_class):
    """The original helpers' model decorator, kept so that old code
    imports. It does nothing: Snorky reads committed changes from
    PostgreSQL, so publishing them from model signals would send each
    change twice."""
    warnings.warn(
        "snorky subscribable() is not needed with PostgreSQL change capture and does nothing",
        DeprecationWarning, stacklevel=2)
    return model_class
