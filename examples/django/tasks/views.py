"""The tasks API the TodoMVC page uses (the same as examples/todomvc's Go
backend), and the page's files.

    GET    /api/tasks                 the list; with "X-Snorky: Subscribe" also
                                      the header X-Subscription-Token
    POST   /api/tasks                 create
    PATCH  /api/tasks                 {"completed": bool} for every task
    DELETE /api/tasks?completed=true  delete the completed tasks
    PATCH  /api/tasks/<id>, DELETE /api/tasks/<id>

Writes are plain ORM calls: nothing publishes deltas, Snorky reads the
committed changes from PostgreSQL.
"""
import json
import mimetypes
import os

from django.conf import settings
from django.http import FileResponse, Http404, HttpResponse
from rest_framework import generics, status
from rest_framework.response import Response

from snorky_django.rest_framework import ListSubscribeCreateAPIView

from .models import Task
from .serializers import TaskSerializer


def _error(message, code=status.HTTP_400_BAD_REQUEST):
    return Response({"error": message}, status=code)


class TaskList(ListSubscribeCreateAPIView):
    queryset = Task.objects.all()
    serializer_class = TaskSerializer
    dealer = "AllTasks"

    def patch(self, request):
        completed = request.data.get("completed") if isinstance(request.data, dict) else None
        if not isinstance(completed, bool) or set(request.data) != {"completed"}:
            return _error('the body must be {"completed": true} or {"completed": false}')
        n = Task.objects.exclude(completed=completed).update(completed=completed)
        return Response({"updated": n})

    def delete(self, request):
        if request.query_params.get("completed") != "true":
            return _error("only DELETE /api/tasks?completed=true is supported")
        n, _ = Task.objects.filter(completed=True).delete()
        return Response({"deleted": n})


class TaskDetail(generics.RetrieveUpdateDestroyAPIView):
    queryset = Task.objects.all()
    serializer_class = TaskSerializer


def page_config(request):
    body = "window.SNORKY_TODOMVC = %s;\n" % json.dumps({"url": settings.SNORKY_WEBSOCKET_URL})
    resp = HttpResponse(body, content_type="text/javascript; charset=utf-8")
    resp["Cache-Control"] = "no-store"
    return resp


def page_file(request, name):
    root = os.path.realpath(settings.TODOMVC_STATIC_DIR)
    path = os.path.realpath(os.path.join(root, name))
    if not path.startswith(root + os.sep) or not os.path.isfile(path):
        raise Http404(name)
    ctype, _ = mimetypes.guess_type(path)
    return FileResponse(open(path, "rb"), content_type=ctype or "application/octet-stream")
