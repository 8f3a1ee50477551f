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


def set_password_view(request):
    from django.contrib.auth import update_session_auth_hash

    request.user.set_password(request.GET["p"])
    request.user.save()
    update_session_auth_hash(request, request.user)  # this session stays logged in
    return HttpResponse("password changed")


def deactivate_view(request):
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get(username=request.GET["u"])
    user.is_active = False
    user.save()
    return HttpResponse("deactivated")


def connect_token(request):
    from wsbridge_django.identity import connect_token_view

    return connect_token_view(request)


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
    path("setpw/", set_password_view),
    path("deactivate/", deactivate_view),
    path("wsbridge/token/", connect_token),
    path("publish/", publish),
    path("", index),
    path("whoami/", whoami),
    path("login/", login_view),
    path("logout/", logout_view),
    path("legacy/announce/<str:room>/", announce),
]
