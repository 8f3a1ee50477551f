"""The project's Channels 1.x routing, named by CHANNEL_LAYERS["default"]["ROUTING"]."""

from wsbridge import include, route, route_class  # was: from channels.routing import ...

from .bindings import NoteBinding

channel_routing = [
    # a 1.0 dict of dotted paths, included by "module.attr" under a path prefix
    include("djtest.legacy.chat_routing.channel_routing", path=r"^/legacy/chat"),
    route("chat.receive", "djtest.legacy.chat.chat_join", command="^join$"),
    route("chat.receive", "djtest.legacy.chat.chat_leave", command="^leave$"),
    route("chat.receive", "djtest.legacy.chat.chat_send", command="^send$"),
    route("websocket.connect", "djtest.legacy.chat.silent_connect", path=r"^/legacy/silent/$"),
    route_class("djtest.legacy.consumers.IntValueDemultiplexer", path=r"^/legacy/intval/$"),
    route_class("djtest.legacy.consumers.NoteDemultiplexer", path=r"^/legacy/notes/$"),
    route("binding.v1notes", NoteBinding.consumer),
    # the Channels 4 tutorial's routes, in the same list
    include("djtest.legacy.chat4.websocket_urlpatterns"),
]
