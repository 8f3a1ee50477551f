"""Channels 1.x data binding, imports changed only."""

from wsbridge_django.binding import WebsocketBinding  # was: from channels.binding.websockets import

from ..models import IntegerValue, Note


class IntegerValueBinding(WebsocketBinding):
    """The 1.x docs' slider example (1.1: group_names a classmethod)."""

    model = IntegerValue
    stream = "intval"
    fields = ["name", "value"]

    @classmethod
    def group_names(cls, instance):
        return ["intval-updates"]

    def has_permission(self, user, action, pk):
        return True


class NoteBinding(WebsocketBinding):
    """Channels 1.0's form: group_names(self, instance, action); users must be logged in."""

    model = Note
    stream = "v1notes"
    fields = ["title", "board"]

    def group_names(self, instance, action):
        return [f"v1notes-{instance.board}"]

    def has_permission(self, user, action, pk):
        return user.is_authenticated
