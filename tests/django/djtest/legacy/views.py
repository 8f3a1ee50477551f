"""A Channels 4 view that talks to a group: imports changed, code not."""

from django.http import HttpResponse

from wsbridge import async_to_sync  # was: from asgiref.sync import async_to_sync
from wsbridge.layers import get_channel_layer  # was: from channels.layers import get_channel_layer


def announce(request, room):
    channel_layer = get_channel_layer()
    async_to_sync(channel_layer.group_send)(
        f"chat_{room}", {"type": "chat.message", "message": request.GET["message"]}
    )
    return HttpResponse("sent")
