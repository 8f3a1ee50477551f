from wsbridge_django.binding import Binding

from .models import Note


class NoteBinding(Binding):
    model = Note
    stream = "notes"
    fields = ["title", "board", "body"]

    @classmethod
    def group_names(cls, instance):
        return [f"notes.{instance.board}"]

    def has_permission(self, user, action, pk):
        # Anyone logged in may create; only the owner may change or delete.
        if not user.is_authenticated:
            return False
        if action == "create":
            return True
        return Note.objects.filter(pk=pk, owner=user).exists()

    def create(self, data):
        return Note.objects.create(owner=self.user, **data)
