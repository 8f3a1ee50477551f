"""A post_save receiver sends every saved post to the readers' Group.

Plain synchronous code, the Channels 1.x way: ``Group(...).send({"text": ...})``
reaches every socket in the group as a text frame. The send waits for the
transaction to commit, so readers never see a post that was rolled back.
"""

import json

from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from wsbridge import Group

from .models import Post

GROUP = "liveblog"


@receiver(post_save, sender=Post)
def announce_post(sender, instance, created, **kwargs):
    message = {
        "text": json.dumps(
            {"event": "created" if created else "updated", "post": instance.as_dict()}
        )
    }
    transaction.on_commit(lambda: Group(GROUP).send(message))
