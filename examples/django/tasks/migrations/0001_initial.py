from django.db import migrations, models

# The table of examples/todomvc (the same SQL), with database defaults so
# that rows inserted with plain SQL get them too (Django's own migrations
# keep defaults in Python).
CREATE = """CREATE TABLE IF NOT EXISTS tasks (
    id         bigserial PRIMARY KEY,
    title      text NOT NULL,
    completed  bool NOT NULL DEFAULT false,
    created_at timestamptz DEFAULT now()
)"""


class Migration(migrations.Migration):
    initial = True
    dependencies = []

    operations = [
        migrations.RunSQL(
            CREATE,
            "DROP TABLE tasks",
            state_operations=[
                migrations.CreateModel(
                    name="Task",
                    fields=[
                        ("id", models.BigAutoField(primary_key=True, serialize=False)),
                        ("title", models.TextField()),
                        ("completed", models.BooleanField(default=False)),
                        ("created_at", models.DateTimeField(auto_now_add=True, null=True)),
                    ],
                    options={"db_table": "tasks", "ordering": ["id"]},
                ),
            ],
        ),
    ]
