from django.urls import path

from tasks import views

urlpatterns = [
    path("api/tasks", views.TaskList.as_view()),
    path("api/tasks/<int:pk>", views.TaskDetail.as_view()),
    path("config.js", views.page_config),
    path("", views.page_file, {"name": "index.html"}),
    path("<str:name>", views.page_file),
]
