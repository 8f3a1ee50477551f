from django.db import models


class Post(models.Model):
    title = models.CharField(max_length=200)
    body = models.TextField()
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created"]

    def as_dict(self):
        return {
            "id": self.pk,
            "title": self.title,
            "body": self.body,
            "created": self.created.isoformat(),
        }
