"""Unit tests of snorky_django against a fake Snorky backend (and, for the
views, the PostgreSQL database named by DATABASE_URL). Run by
examples/django/helpers_test.go; by hand, from examples/django:

    DATABASE_URL=postgres://… PYTHONPATH=snorky_django/src:. \\
    DJANGO_SETTINGS_MODULE=todo.test_settings python3 -m unittest discover -s snorky_django/tests
"""
import datetime
import decimal
import json
import threading
import unittest
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import django

django.setup()

from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test import RequestFactory, override_settings  # noqa: E402

import snorky_django  # noqa: E402
from snorky.backend.django import authorize_subscription as original_authorize  # noqa: E402
from snorky.backend.django.rest_framework import ListSubscribeAPIView  # noqa: E402


class FakeBackend:
    """A backend endpoint that records requests and answers with reply(params)."""

    def __init__(self):
        self.requests = []
        self.status = 200
        self.reply = lambda params: {"type": "response", "data": "tok"}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append((dict(self.headers), body))
                msg = fake.reply(body["message"]["params"])
                out = json.dumps({"service": body["service"], "message": msg}).encode()
                self.send_response(fake.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = "http://127.0.0.1:%d/backend" % self.server.server_address[1]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Base(unittest.TestCase):
    def setUp(self):
        self.fake = FakeBackend()
        self.addCleanup(self.fake.close)
        self.settings = override_settings(SNORKY_BACKEND_URL=self.fake.url, SNORKY_API_KEY="k3y")
        self.settings.enable()
        self.addCleanup(self.settings.disable)

    def last(self):
        headers, body = self.fake.requests[-1]
        return headers, body


class HelperTest(Base):
    def test_authorize_subscription(self):
        self.assertEqual(snorky_django.authorize_subscription([{"dealer": "AllTasks", "query": None}]), "tok")
        headers, body = self.last()
        self.assertEqual(body, {"service": "datasync_backend", "message": {
            "command": "authorizeSubscription", "params": {"items": [{"dealer": "AllTasks", "query": None}]}}})
        self.assertEqual(headers["X-Backend-Key"], "k3y")
        self.assertEqual(headers["Content-Type"], "application/json")

    def test_original_import_path(self):
        self.assertEqual(original_authorize([{"dealer": "AllTasks", "query": 7}]), "tok")
        self.assertEqual(self.last()[1]["message"]["params"], {"items": [{"dealer": "AllTasks", "query": 7}]})

    def test_snapshot_and_service_setting(self):
        with override_settings(SNORKY_DATASYNC_SERVICE="ds"):
            snorky_django.authorize_subscription([], snapshot="10:12:11")
        self.assertEqual(self.last()[1]["service"], "ds")
        self.assertEqual(self.last()[1]["message"]["params"], {"items": [], "snapshot": "10:12:11"})

    def test_publish_deltas_with_the_json_encoder(self):
        self.fake.reply = lambda p: {"type": "response", "data": None}
        delta = {"type": "insert", "model": "Task", "data": {"id": 1, "price": decimal.Decimal("1.50"),
                                                            "at": datetime.datetime(2026, 1, 2, 3, 4, 5)}}
        with override_settings(SNORKY_JSON_ENCODER="rest_framework.utils.encoders.JSONEncoder"):
            self.assertIsNone(snorky_django.publish_deltas([delta]))
        sent = self.last()[1]["message"]
        self.assertEqual(sent["command"], "publishDeltas")
        self.assertEqual(sent["params"]["deltas"][0]["data"], {"id": 1, "price": 1.5, "at": "2026-01-02T03:04:05"})

    def test_publish_and_identity(self):
        self.fake.reply = lambda p: {"type": "response", "data": "id-tok" if "identity" in p else None}
        snorky_django.publish({"room": 1}, "hi")
        self.assertEqual(self.last()[1], {"service": "pubsub_backend", "message": {
            "command": "publish", "params": {"channel": {"room": 1}, "message": "hi"}}})
        self.assertEqual(snorky_django.authorize_identity({"user": 7}, ttl=60), "id-tok")
        self.assertEqual(self.last()[1], {"service": "identity_backend", "message": {
            "command": "authorizeIdentity", "params": {"identity": {"user": 7}, "ttl": 60}}})
        with self.assertRaises(ValueError):
            snorky_django.authorize_identity(None)

    def test_error_reply(self):
        self.fake.reply = lambda p: {"type": "error", "callId": None, "message": "No such dealer"}
        with self.assertRaises(snorky_django.SnorkyError) as cm:
            snorky_django.authorize_subscription([{"dealer": "Nope", "query": None}])
        self.assertEqual(cm.exception.message, "No such dealer")
        self.assertTrue(cm.exception.reply)
        self.assertEqual(str(cm.exception), "Error from Snorky server: No such dealer")
        self.assertIsInstance(cm.exception, RuntimeError)

    def test_wrong_key(self):
        self.fake.status = 401
        with self.assertRaisesRegex(snorky_django.SnorkyError, "HTTP 401 .SNORKY_API_KEY differs"):
            snorky_django.publish("c", 1)

    def test_unreachable(self):
        self.fake.close()
        with self.assertRaisesRegex(snorky_django.SnorkyError, "cannot reach"):
            snorky_django.publish("c", 1)

    def test_missing_settings(self):
        with override_settings(SNORKY_BACKEND_URL=None):
            with self.assertRaisesRegex(ImproperlyConfigured, "SNORKY_BACKEND_URL"):
                snorky_django.publish("c", 1)

    def test_pyproject(self):
        import os
        import tomllib
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        with open(os.path.join(here, "pyproject.toml"), "rb") as f:
            project = tomllib.load(f)["project"]
        self.assertEqual(project["name"], "snorky-django")
        self.assertTrue(os.path.isfile(os.path.join(here, "src", "snorky_django", "__init__.py")))

    def test_subscribable_does_nothing(self):
        class Model:
            pass

        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            self.assertIs(snorky_django.subscribable(Model), Model)
        self.assertIn("not needed", str(w[0].message))


class ViewTest(Base):
    """ListSubscribeAPIView (the original import path) on PostgreSQL."""

    @classmethod
    def setUpClass(cls):
        with connection.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS items (id int PRIMARY KEY, v int NOT NULL)")
            cur.execute("DELETE FROM items")
            cur.execute("INSERT INTO items VALUES (1, 10), (2, 20)")

    def get(self, **headers):
        from itemsapp.views import ItemList
        self.assertTrue(issubclass(ItemList, ListSubscribeAPIView))
        request = RequestFactory().get("/api/items", **headers)
        response = ItemList.as_view()(request)
        response.render()
        return response

    def test_without_the_header(self):
        response = self.get()
        self.assertEqual(json.loads(response.content), [{"id": 1, "v": 10}, {"id": 2, "v": 20}])
        self.assertFalse(response.has_header("X-Subscription-Token"))
        self.assertEqual(self.fake.requests, [])

    def test_snapshot(self):
        response = self.get(HTTP_X_SNORKY="Subscribe")
        self.assertEqual(response["X-Subscription-Token"], "tok")
        params = self.last()[1]["message"]["params"]
        self.assertEqual(params["items"], [{"dealer": "AllItems", "query": None}])
        self.assertRegex(params["snapshot"], r"^\d+:\d+:[\d,]*$")

    def test_snapshot_too_old_falls_back(self):
        self.fake.reply = lambda p: ({"type": "error", "callId": None, "message": "Snapshot too old"}
                                     if "snapshot" in p else {"type": "response", "data": "plain"})
        response = self.get(HTTP_X_SNORKY="subscribe")
        self.assertEqual(response["X-Subscription-Token"], "plain")
        self.assertEqual(len(self.fake.requests), 2)
        self.assertEqual(json.loads(response.content), [{"id": 1, "v": 10}, {"id": 2, "v": 20}])

    def test_other_errors_propagate(self):
        self.fake.reply = lambda p: {"type": "error", "callId": None, "message": "No such dealer"}
        with self.assertRaisesRegex(snorky_django.SnorkyError, "No such dealer"):
            self.get(HTTP_X_SNORKY="Subscribe")

    def test_inside_a_read_committed_transaction(self):
        # As under ATOMIC_REQUESTS: the request's transaction has already
        # run a query, so the view authorises first (the original rule).
        with transaction.atomic():
            with connection.cursor() as cur:
                cur.execute("SELECT 1")
            response = self.get(HTTP_X_SNORKY="Subscribe")
        self.assertEqual(response["X-Subscription-Token"], "tok")
        self.assertNotIn("snapshot", self.last()[1]["message"]["params"])

    def test_current_snapshot_needs_repeatable_read(self):
        with self.assertRaisesRegex(ImproperlyConfigured, "atomic"):
            snorky_django.current_snapshot()
        with transaction.atomic():
            with self.assertRaisesRegex(ImproperlyConfigured, "READ COMMITTED"):
                snorky_django.current_snapshot()


if __name__ == "__main__":
    unittest.main()
