"""Data binding, as Channels 1.x had it: model changes pushed to groups, client changes checked.

A binding names a model, a stream, the fields clients see, and the groups
an instance's changes go to::

    class NoteBinding(Binding):
        model = Note
        stream = "notes"
        fields = ["title", "body"]

        @classmethod
        def group_names(cls, instance):
            return [f"notes.{instance.board}"]

        def has_permission(self, user, action, pk):
            return user.is_authenticated

**Outbound.** Every save and delete of a ``Note`` sends, to each of its
groups, once the transaction commits, a text frame::

    {"stream": "notes", "payload": {"action": "create" | "update" | "delete",
                                    "pk": 1, "model": "board.note", "data": {"title": ...}}}

An instance that moves out of a group sends ``delete`` to the groups it left
and ``create`` to those it joined. Members are any consumers in those
groups (a :class:`BindingConsumer`, a Channels 1.x function consumer...).

**Inbound.** A client sends the same shape (``{"stream", "payload": {"action",
"pk", "data"}}``); :meth:`Binding.trigger_inbound` asks
``has_permission(user, action, pk)`` (deny by default), validates ``data``
with a ModelForm limited to ``fields``, and applies it. The resulting
save or delete is broadcast like any other.
"""

from __future__ import annotations

import json
import logging
from typing import Any, ClassVar

from django.db import transaction
from django.db.models import signals

from wsbridge import JsonWebsocketConsumer
from wsbridge.consumers.message import Group

__all__ = ["Binding", "BindingConsumer", "BindingError", "CREATE", "UPDATE", "DELETE", "registry"]

logger = logging.getLogger("wsbridge.django")

#: ``action`` of a change that created a row.
CREATE = "create"
#: ``action`` of a change that updated a row.
UPDATE = "update"
#: ``action`` of a change that deleted a row.
DELETE = "delete"
ACTIONS = (CREATE, UPDATE, DELETE)

#: stream name -> binding class, for every binding defined.
registry: dict[str, type[Binding]] = {}

_STASH = "_wsbridge_binding_groups"


class BindingError(Exception):
    """An inbound change was refused; ``str(error)`` is what the client is told."""


class Binding:
    """Declare ``model``, ``stream``, ``fields`` and ``group_names(instance)``; see the module docs.

    Instances exist for inbound changes only: ``self.user`` and ``self.scope``
    are the connection's.
    """

    model: ClassVar[Any] = None
    stream: ClassVar[str | None] = None
    fields: ClassVar[list[str] | tuple[str, ...] | None] = None
    #: Send outbound changes when the transaction commits (True) or at once.
    send_on_commit: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.model is None:
            return  # an abstract base
        if not cls.stream or not cls.fields:
            raise TypeError(
                f"{cls.__name__} needs stream and fields (use ['__all__'] for every field)"
            )
        registry[cls.stream] = cls
        uid = f"wsbridge.binding.{cls.__module__}.{cls.__qualname__}"
        signals.pre_save.connect(
            cls._pre_save, sender=cls.model, weak=False, dispatch_uid=uid + ".pre_save"
        )
        signals.post_save.connect(
            cls._post_save, sender=cls.model, weak=False, dispatch_uid=uid + ".post_save"
        )
        signals.pre_delete.connect(
            cls._pre_delete, sender=cls.model, weak=False, dispatch_uid=uid + ".pre_delete"
        )
        signals.post_delete.connect(
            cls._post_delete, sender=cls.model, weak=False, dispatch_uid=uid + ".post_delete"
        )

    def __init__(self, user: Any = None, scope: dict[str, Any] | None = None) -> None:
        self.user = user
        self.scope = scope or {}

    # -- to override -----------------------------------------------------------

    @classmethod
    def group_names(cls, instance: Any) -> list[str]:
        """The groups that hear about ``instance``'s changes."""
        raise NotImplementedError(f"{cls.__name__} must define group_names(instance)")

    def has_permission(self, user: Any, action: str, pk: Any) -> bool:
        """May ``user`` do ``action`` (create/update/delete) on instance ``pk``? Default: no."""
        return False

    # -- outbound ----------------------------------------------------------------

    @classmethod
    def _pre_save(cls, sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
        old: set[str] = set()
        if not instance._state.adding and instance.pk is not None:
            # The groups it was in are those of the row as stored, not of the edited object.
            stored = cls.model._default_manager.filter(pk=instance.pk).first()
            if stored is not None:
                old = set(cls.group_names(stored))
        instance.__dict__.setdefault(_STASH, {})[cls] = old

    @classmethod
    def _post_save(cls, sender: Any, instance: Any, created: bool = False, **kwargs: Any) -> None:
        old = instance.__dict__.get(_STASH, {}).pop(cls, set())
        new = set(cls.group_names(instance))
        cls._broadcast(instance, {DELETE: old - new, CREATE: new - old, UPDATE: new & old})

    @classmethod
    def _pre_delete(cls, sender: Any, instance: Any, **kwargs: Any) -> None:
        instance.__dict__.setdefault(_STASH, {})[cls] = set(cls.group_names(instance))

    @classmethod
    def _post_delete(cls, sender: Any, instance: Any, **kwargs: Any) -> None:
        old = instance.__dict__.get(_STASH, {}).pop(cls, set())
        cls._broadcast(
            instance, {DELETE: old}, pk=instance.pk if instance.pk is not None else kwargs.get("pk")
        )

    @classmethod
    def _broadcast(
        cls, instance: Any, groups_by_action: dict[str, set[str]], pk: Any = None
    ) -> None:
        frames = []
        for action, groups in groups_by_action.items():
            if not groups:
                continue
            text = json.dumps(
                {"stream": cls.stream, "payload": cls.serialize(instance, action, pk)}
            )
            frames.extend((group, text) for group in sorted(groups))
        if not frames:
            return

        def send() -> None:
            for group, text in frames:
                try:
                    Group(group).send({"text": text})
                except Exception:  # the save succeeded; a layer outage must not undo it
                    logger.exception("binding %s could not send to group %s", cls.__name__, group)

        if cls.send_on_commit:
            transaction.on_commit(send)
        else:
            send()

    @classmethod
    def serialize(cls, instance: Any, action: str, pk: Any = None) -> dict[str, Any]:
        """The payload for one change: action, pk, model label and the bound fields."""
        from django.core.serializers.json import DjangoJSONEncoder

        data = {} if action == DELETE else cls.serialize_data(instance)
        return {
            "action": action,
            "pk": json.loads(
                json.dumps(pk if pk is not None else instance.pk, cls=DjangoJSONEncoder)
            ),
            "model": instance._meta.label_lower,
            "data": data,
        }

    @classmethod
    def serialize_data(cls, instance: Any) -> dict[str, Any]:
        """The bound fields of ``instance`` as JSON-ready values."""
        from django.core import serializers

        fields = None if list(cls.fields or ()) == ["__all__"] else list(cls.fields or ())
        encoded = serializers.serialize("json", [instance], fields=fields)
        return json.loads(encoded)[0]["fields"]

    # -- inbound -----------------------------------------------------------------

    @classmethod
    def trigger_inbound(cls, payload: Any, user: Any, scope: dict[str, Any] | None = None) -> Any:
        """Apply a client's ``{"action", "pk", "data"}`` if ``has_permission`` allows it.

        Returns the saved instance (None for a delete).

        Raises:
            BindingError: a malformed payload, a refusal, an unknown pk or
                invalid data; its message is safe to show the client.
        """
        if not isinstance(payload, dict):
            raise BindingError("payload must be an object")
        action, pk, data = payload.get("action"), payload.get("pk"), payload.get("data") or {}
        if action not in ACTIONS:
            raise BindingError(f"action must be one of {', '.join(ACTIONS)}")
        if not isinstance(data, dict):
            raise BindingError("data must be an object")
        if action != CREATE and pk is None:
            raise BindingError(f"{action} needs a pk")
        binding = cls(user=user, scope=scope)
        if not binding.has_permission(user, action, pk):
            logger.info("binding %s refused %s of pk=%r for %s", cls.__name__, action, pk, user)
            raise BindingError("permission denied")
        if action == CREATE:
            return binding.create(binding.clean(data))
        instance = cls.model._default_manager.filter(pk=pk).first()
        if instance is None:
            raise BindingError(f"no {cls.model._meta.verbose_name} with pk {pk}")
        if action == DELETE:
            binding.delete(instance)
            return None
        return binding.update(instance, binding.clean(data, instance))

    def clean(self, data: dict[str, Any], instance: Any = None) -> dict[str, Any]:
        """Validate ``data`` with a ModelForm limited to the bound fields; return cleaned values."""
        from django.forms.models import model_to_dict, modelform_factory

        fields = "__all__" if list(self.fields or ()) == ["__all__"] else list(self.fields or ())
        form_class = modelform_factory(self.model, fields=fields)
        names = list(form_class.base_fields)
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise BindingError(f"unknown field(s): {', '.join(unknown)}")
        # Start from the stored values (update) or the model's defaults (create),
        # so a partial payload only changes what it names.
        current = model_to_dict(instance if instance is not None else self.model(), fields=names)
        form = form_class(data={**current, **data})
        if not form.is_valid():
            errors = "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items())
            raise BindingError(f"invalid data: {errors}")
        return {name: form.cleaned_data[name] for name in names}

    def create(self, data: dict[str, Any]) -> Any:
        """Create the instance from validated ``data`` (override to add owner fields...)."""
        return self.model._default_manager.create(**data)

    def update(self, instance: Any, data: dict[str, Any]) -> Any:
        """Apply validated ``data`` to ``instance`` and save it."""
        for name, value in data.items():
            setattr(instance, name, value)
        instance.save()
        return instance

    def delete(self, instance: Any) -> None:
        """Delete ``instance``."""
        instance.delete()


class BindingConsumer(JsonWebsocketConsumer):
    """A JSON consumer for one or more bindings, multiplexed by ``stream``.

    Joins :meth:`binding_groups` on connect, so it hears the broadcasts, and
    hands ``{"stream", "payload"}`` frames to the binding of that stream,
    with the connection's user. A refused or invalid change is answered on
    the same stream with ``{"error": reason, "action": ...}``.
    """

    bindings: ClassVar[list[type[Binding]]] = []

    def binding_groups(self) -> list[str]:
        """The groups this connection listens to (override: per room, per user...)."""
        return []

    def connect(self) -> None:
        self._joined = list(self.binding_groups())
        for group in self._joined:
            self.channel_layer.group_add(group, self.channel_name)  # type: ignore[union-attr]
        self.accept()

    def disconnect(self, code: int) -> None:
        for group in getattr(self, "_joined", ()):
            self.channel_layer.group_discard(group, self.channel_name)  # type: ignore[union-attr]

    def receive_json(self, content: Any) -> None:
        streams = {b.stream: b for b in self.bindings}
        stream = content.get("stream") if isinstance(content, dict) else None
        binding = streams.get(stream)
        if binding is None:
            self.send_json({"stream": stream, "payload": {"error": f"unknown stream {stream!r}"}})
            return
        payload = content.get("payload")
        try:
            binding.trigger_inbound(payload, self.scope.get("user"), self.scope)
        except BindingError as exc:
            action = payload.get("action") if isinstance(payload, dict) else None
            self.send_json({"stream": stream, "payload": {"error": str(exc), "action": action}})
