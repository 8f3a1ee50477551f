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
