"""Django REST Framework views that hand out Snorky subscription tokens.

A list view built on :class:`ListSubscribeModelMixin` (or the concrete
:class:`ListSubscribeAPIView`, :class:`ListSubscribeCreateAPIView`) behaves
as usual, and when the request carries the header ``X-Snorky: Subscribe``
(any case) it also authorises a subscription to its dealer and answers with
the header ``X-Subscription-Token``::

    class TaskList(ListSubscribeCreateAPIView):
        queryset = Task.objects.all()
        serializer_class = TaskSerializer
        dealer = "AllTasks"

On PostgreSQL the view runs its query and ``pg_current_snapshot()`` in one
REPEATABLE READ transaction of its own and authorises with that snapshot, so
the subscription receives exactly the changes the response did not show:
none lost, none twice. (The original helpers authorised before the query,
so a change could arrive twice.) It falls back to that original order when
the snapshot cannot be used: another database, a request already inside a
READ COMMITTED transaction (``ATOMIC_REQUESTS``), or a server that answers
"Snapshot too old" or "Snapshots need a database".
"""

import functools
import logging

from django.db import connections, router, transaction
from rest_framework import generics, mixins

from . import SnorkyError, authorize_subscription, current_snapshot

__all__ = [
    "SubscribeModelMixin",
    "ListSubscribeModelMixin",
    "ListSubscribeAPIView",
    "ListSubscribeCreateAPIView",
    "subscription_in_response",
]

log = logging.getLogger("snorky_django")

TOKEN_HEADER = "X-Subscription-Token"

_FALLBACK_ERRORS = ("Snapshot too old", "Snapshots need a database")


class SubscribeModelMixin(object):
    """What a view subscribes to: ``dealer`` and ``dealer_query``, or
    override :meth:`get_subscription_items` for several items."""

    dealer = None
    dealer_query = None

    def get_dealer(self):
        """The dealer's name: ``dealer``, else the model's class name."""
        if self.dealer:
            return self.dealer
        model = getattr(self, "model", None)
        if model is None and getattr(self, "queryset", None) is not None:
            model = self.queryset.model
        if model is None:
            raise AttributeError("Missing dealer: set the view's dealer attribute")
        return model.__name__

    def get_dealer_query(self):
        """The dealer query: ``dealer_query`` by default (None for a
        broadcast dealer; a key for a simple one; a filter)."""
        return self.dealer_query

    def get_subscription_items(self):
        """The items to authorise: by default one, of :meth:`get_dealer`
        and :meth:`get_dealer_query`."""
        return [{"dealer": self.get_dealer(), "query": self.get_dealer_query()}]

    def requested_subscription(self):
        """Whether the request carries ``X-Snorky: Subscribe``."""
        return self.request.META.get("HTTP_X_SNORKY", "").strip().lower() == "subscribe"

    def get_subscription_database(self):
        """The database alias the view reads from."""
        queryset = getattr(self, "queryset", None)
        if queryset is not None:
            return router.db_for_read(queryset.model)
        return "default"


def _with_subscription(view, method, args, kwargs):
    items = view.get_subscription_items()
    using = view.get_subscription_database()
    conn = connections[using]
    snapshot = None
    if conn.vendor == "postgresql":
        outer = conn.in_atomic_block
        with transaction.atomic(using=using):
            if not outer:
                # The transaction's first statement: every query below
                # sees one snapshot, the one pg_current_snapshot() names.
                with conn.cursor() as cur:
                    cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                isolation = "repeatable read"
            else:
                with conn.cursor() as cur:
                    cur.execute("SELECT current_setting('transaction_isolation')")
                    isolation = cur.fetchone()[0]
            if isolation in ("repeatable read", "serializable"):
                snapshot = current_snapshot(using)
                response = method(view, *args, **kwargs)
        if snapshot is not None:
            try:
                token = authorize_subscription(items, snapshot=snapshot)
            except SnorkyError as e:
                if not (e.reply and e.message in _FALLBACK_ERRORS):
                    raise
                log.warning("snorky: %s; authorising before the query instead", e.message)
                snapshot = None
            else:
                response[TOKEN_HEADER] = token
                return response
        else:
            log.warning("snorky: the request's transaction is %s, not REPEATABLE READ; "
                        "authorising before the query (changes may arrive twice)", isolation)
    # The original rule: authorise first, then query.
    token = authorize_subscription(items)
    response = method(view, *args, **kwargs)
    response[TOKEN_HEADER] = token
    return response


def subscription_in_response(method):
    """Decorate a response-returning view method so that, when the request
    asks for a subscription, it also answers ``X-Subscription-Token``."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if not self.requested_subscription():
            return method(self, *args, **kwargs)
        return _with_subscription(self, method, args, kwargs)

    return wrapper


class ListSubscribeModelMixin(SubscribeModelMixin, mixins.ListModelMixin):
    """A ``list()`` that understands ``X-Snorky: Subscribe``."""

    @subscription_in_response
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)


class ListSubscribeAPIView(ListSubscribeModelMixin, generics.GenericAPIView):
    """GET: the list, with a subscription token on request."""

    def get(self, request, *args, **kwargs):
        return self.list(request, *args, **kwargs)


class ListSubscribeCreateAPIView(ListSubscribeModelMixin, mixins.CreateModelMixin, generics.GenericAPIView):
    """GET: the list, with a subscription token on request; POST: create."""

    def get(self, request, *args, **kwargs):
        return self.list(request, *args, **kwargs)

    def post(self, request, *args, **kwargs):
        return self.create(request, *args, **kwargs)
