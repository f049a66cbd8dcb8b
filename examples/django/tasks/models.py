from django.db import models


class Task(models.Model):
    """A task of the TodoMVC list. No signal, decorator or hook: Snorky
    reads the committed changes of this table from PostgreSQL."""

    title = models.TextField()
    completed = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True, null=True)

    class Meta:
        db_table = "tasks"
        ordering = ["id"]
