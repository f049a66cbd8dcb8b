from django.db import models


class Item(models.Model):
    """The handoff test's table (created by the test, not migrated)."""

    id = models.IntegerField(primary_key=True)
    v = models.IntegerField()

    class Meta:
        db_table = "items"
        managed = False
