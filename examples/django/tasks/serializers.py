from rest_framework import serializers

from .models import Task


class TaskSerializer(serializers.ModelSerializer):
    # Trimmed, not blank, at most 1000 characters (as the Go example).
    title = serializers.CharField(max_length=1000)

    class Meta:
        model = Task
        fields = ["id", "title", "completed", "created_at"]
        read_only_fields = ["created_at"]
