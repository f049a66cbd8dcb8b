from django.urls import path

from itemsapp.views import ItemList

from .urls import urlpatterns as example

urlpatterns = [path("api/items", ItemList.as_view())] + example
