from django.db import models


class Task(models.Model):
    """A job a visitor started: how far it got, and its result."""

    size = models.PositiveIntegerField(default=10)
    progress = models.PositiveIntegerField(default=0)  # percent
    state = models.CharField(max_length=10, default="queued")  # queued, running, done
    result = models.TextField(blank=True, default="")

    def as_dict(self):
        return {
            "id": self.pk,
            "progress": self.progress,
            "state": self.state,
            "result": self.result,
        }
