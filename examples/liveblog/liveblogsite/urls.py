from blog import views
from django.urls import path

urlpatterns = [
    path("", views.index, name="index"),
    path("write/", views.write, name="write"),
]
