from django.http import HttpResponse, JsonResponse
from django.urls import path

from .legacy.views import announce


def index(request):
    return HttpResponse("ordinary page ok")


def whoami(request):
    user = request.user
    return JsonResponse({"user": user.get_username() if user.is_authenticated else None})


def login_view(request):
    from django.contrib.auth import authenticate, login

    user = authenticate(request, username=request.GET["u"], password=request.GET["p"])
    if user is None:
        return HttpResponse("bad credentials", status=403)
    login(request, user)
    return HttpResponse("logged in")


def logout_view(request):
    from django.contrib.auth import logout

    logout(request)
    return HttpResponse("logged out")


def publish(request):
    """A view sending to a group, as the tutorial shows: the process's layer."""
    import os

    from wsbridge import get_channel_layer

    layer = get_channel_layer()
    layer.group_send(
        "djtest.room", {"type": "room.message", "text": request.GET["text"], "pid": os.getpid()}
    )
    return HttpResponse(f"published by {os.getpid()} on {type(layer).__name__}")


urlpatterns = [
    path("publish/", publish),
    path("", index),
    path("whoami/", whoami),
    path("login/", login_view),
    path("logout/", logout_view),
    path("legacy/announce/<str:room>/", announce),
]
