from django.http import Http404
from django.shortcuts import render

from .consumers import ROOM_NAME


def index(request):
    return render(request, "chat/index.html")


def room(request, room_name):
    if not ROOM_NAME.fullmatch(room_name):
        raise Http404("room names are letters, digits, '-', '_' and '.'")
    return render(request, "chat/room.html", {"room_name": room_name})
