"""Data binding, as Channels 1.x had it: model changes pushed to groups, client changes checked.

A binding names a model, a stream, the fields clients see, and the groups
an instance's changes go to (``WebsocketBinding`` is the Channels 1.x name
of the same class)::

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

A ``delete`` frame carries the fields as they were, as Channels 1.x sent
them. An instance that moves out of a group sends ``delete`` to the groups
it left and ``create`` to those it joined. Members are any consumers in
those groups (a :class:`BindingConsumer`, a Channels 1.x function consumer...).

``group_names`` is a classmethod taking the instance, or (Channels 1.0) a
method ``group_names(self, instance, action)``; both are called.

**Inbound.** A client sends the same shape (``{"stream", "payload": {"action",
"pk", "data"}}``); :meth:`Binding.trigger_inbound` asks
``has_permission(user, action, pk)`` (deny by default), validates ``data``
with :meth:`Binding.clean` (a ModelForm limited to ``fields``, bound to the
stored instance on update, so unique fields are checked against the other
rows), and applies it. The resulting save or delete is broadcast like any
other. Override ``clean(data, instance)`` to add rules or to change values
before they are saved; raise :class:`BindingError` to refuse.

Inbound changes reach a binding three ways: a :class:`BindingConsumer`;
``Binding.consumer`` as a Channels 1.x function consumer, routed on a
channel (``route("binding.notes", NoteBinding.consumer)``, fed by a
demultiplexer's ``mapping = {"notes": "binding.notes"}``); or in a
demultiplexer's ``consumers = {"notes": NoteBinding.consumer}`` (1.1).
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable
from typing import Any, ClassVar

from django.db import transaction
from django.db.models import signals

from wsbridge import JsonWebsocketConsumer
from wsbridge.consumers.message import Group
from wsbridge.exceptions import ConfigurationError

__all__ = [
    "Binding",
    "WebsocketBinding",
    "BindingConsumer",
    "BindingError",
    "CREATE",
    "UPDATE",
    "DELETE",
    "registry",
]

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
        """The groups that hear about ``instance``'s changes.

        Override as a classmethod ``group_names(cls, instance)``, or as
        Channels 1.0 had it, a method ``group_names(self, instance, action)``.
        """
        raise NotImplementedError(f"{cls.__name__} must define group_names(instance)")

    @classmethod
    def _groups(cls, instance: Any, action: str) -> set[str]:
        """Call ``group_names`` in whichever form the subclass wrote it."""
        raw = inspect.getattr_static(cls, "group_names")
        static = isinstance(raw, (classmethod, staticmethod))
        method: Callable[..., Any] = cls.group_names if static else cls().group_names
        try:
            params = list(inspect.signature(method).parameters.values())
        except (TypeError, ValueError):
            params = []
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        takes_action = len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)
        return set(method(instance, action) if takes_action else method(instance))

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
                old = cls._groups(stored, UPDATE)
        instance.__dict__.setdefault(_STASH, {})[cls] = old

    @classmethod
    def _post_save(cls, sender: Any, instance: Any, created: bool = False, **kwargs: Any) -> None:
        old = instance.__dict__.get(_STASH, {}).pop(cls, set())
        new = cls._groups(instance, CREATE if created else UPDATE)
        cls._broadcast(instance, {DELETE: old - new, CREATE: new - old, UPDATE: new & old})

    @classmethod
    def _pre_delete(cls, sender: Any, instance: Any, **kwargs: Any) -> None:
        instance.__dict__.setdefault(_STASH, {})[cls] = cls._groups(instance, DELETE)

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
        frames: list[tuple[str, str]] = []
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
        """The payload for one change: action, pk, model label and the bound fields.

        A delete carries the fields as they were (Channels 1.x did the same).
        """
        from django.core.serializers.json import DjangoJSONEncoder

        data = cls.serialize_data(instance)
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
        data: dict[str, Any] = json.loads(encoded)[0]["fields"]
        return data

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

    # -- Channels 1.x: the binding as a function consumer ----------------------------

    @classmethod
    def consumer(cls, message: Any, **kwargs: Any) -> None:
        """Channels 1.x function consumer applying one inbound change.

        Route it on a channel (``route("binding.notes", NoteBinding.consumer)``,
        fed by a demultiplexer's ``mapping``) or list it in a demultiplexer's
        ``consumers``. The payload is ``message.content`` (1.0) or the JSON in
        its ``text`` (1.1); the user is ``message.user``, else the
        connection's, else the one in the channel session of the message's
        reply channel. A refusal is answered on the reply channel with
        ``{"stream": stream, "payload": {"error": ..., "action": ...}}``.
        """
        binding = cls(user=None, scope=getattr(message, "scope", None))
        try:
            action, pk, data = binding.deserialize(message)
        except (ValueError, TypeError, KeyError) as exc:
            cls._reply_error(message, f"bad payload: {exc}", None)
            return
        user = _message_user(message)
        try:
            cls.trigger_inbound(
                {"action": action, "pk": pk, "data": data}, user, getattr(message, "scope", None)
            )
        except BindingError as exc:
            cls._reply_error(message, str(exc), action)

    def deserialize(self, message: Any) -> tuple[Any, Any, Any]:
        """``(action, pk, data)`` from a 1.x message: its ``text`` as JSON, or its content."""
        content = message.content
        text = content.get("text") if "action" not in content else None
        body = json.loads(text) if text is not None else content
        if not isinstance(body, dict):
            raise ValueError("payload must be an object")
        return body.get("action"), body.get("pk"), body.get("data")

    @classmethod
    def _reply_error(cls, message: Any, error: str, action: Any) -> None:
        reply = getattr(message, "reply_channel", None)
        if reply is None:
            logger.info("binding %s: %s (no reply_channel to tell)", cls.__name__, error)
            return
        frame = {"stream": cls.stream, "payload": {"error": error, "action": action}}
        reply.send({"text": json.dumps(frame)})

    def clean(self, data: dict[str, Any], instance: Any = None) -> dict[str, Any]:
        """Validate a client's ``data``; return the values to save. An override point.

        The default validates with a ModelForm limited to the bound fields:
        on update the form is bound to ``instance`` (the stored row), so a
        unique field that keeps its value is not "already taken", and fields
        the payload leaves out keep theirs. Override it to add rules or
        change values (call ``super().clean(data, instance)`` first); raise
        :class:`BindingError` with a message safe to show the client to refuse.

        Args:
            data: the payload's ``data`` object, as the client sent it.
            instance: the stored instance for an update, None for a create.
        """
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
        form = form_class(data={**current, **data}, instance=instance)
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


class WebsocketBinding(Binding):
    """The Channels 1.x name: subclass it exactly as :class:`Binding`."""


def _message_user(message: Any) -> Any:
    """The user behind a 1.x message: a decorator's, the connection's, or the channel session's."""
    user = getattr(message, "user", None)
    if user is None:
        user = (getattr(message, "scope", None) or {}).get("user")
    if user is not None:
        return user
    from django.contrib.auth.models import AnonymousUser

    from .auth import get_user
    from .sessions import session_for_reply_channel

    reply = getattr(message, "reply_channel", None)
    session = session_for_reply_channel(reply.name) if reply is not None else None
    if session is not None and session.get("_auth_user_id"):
        return get_user({"session": session})
    return AnonymousUser()


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
        if self._joined:
            layer, name = self.channel_layer, self.channel_name
            if layer is None or name is None:
                raise ConfigurationError(
                    f"{type(self).__name__}.binding_groups() = {self._joined!r} needs a "
                    "channel layer; configure one (wsbridge.layers.configure) or return no groups"
                )
            for group in self._joined:
                layer.group_add(group, name)
        self.accept()

    def disconnect(self, code: int) -> None:
        if self.channel_layer is None or self.channel_name is None:
            return
        for group in getattr(self, "_joined", ()):
            self.channel_layer.group_discard(group, self.channel_name)

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
