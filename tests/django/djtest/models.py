from django.conf import settings
from django.db import models


class Note(models.Model):
    """What the binding and ORM tests read and write."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE
    )
    board = models.CharField(max_length=50, default="main")
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True, default="")

    def __str__(self) -> str:
        return self.title


class IntegerValue(models.Model):
    """The Channels 1.x data-binding example's model: a named slider with a unique name."""

    name = models.CharField(max_length=100, unique=True)
    value = models.IntegerField(default=0)

    def __str__(self) -> str:
        return self.name
