"""A list view written for the original Snorky's helpers, unchanged: the
original import path and the original mixin attributes."""
from rest_framework import serializers
from snorky.backend.django.rest_framework import ListSubscribeAPIView

from .models import Item


class ItemSerializer(serializers.ModelSerializer):
    class Meta:
        model = Item
        fields = ("id", "v")


class ItemList(ListSubscribeAPIView):
    queryset = Item.objects.all()
    serializer_class = ItemSerializer
    dealer = "AllItems"
