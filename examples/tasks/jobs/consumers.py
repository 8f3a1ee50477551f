"""A background channel does the work; a WebSocket consumer shows its progress.

``Channel("tasks.run").send({"id": ...})`` (from the view) runs
:func:`run_task` exactly once: in the serving process by default, or in
``python manage.py runworker`` processes when the site uses the Redis layer.
Each step is reported to the group ``task.<id>``; the page's socket is a
member of it.
"""

import json
import time

from django.conf import settings

from wsbridge import Group, JsonWebsocketConsumer, router

from .models import Task

STEPS = 5


def group_for(pk):
    return f"task.{pk}"


@router.channel("tasks.run")
def run_task(message):
    task = Task.objects.get(pk=message.content["id"])
    task.state = "running"
    task.save(update_fields=["state"])
    total = 0
    for step in range(1, STEPS + 1):
        time.sleep(settings.TASK_STEP_SECONDS)  # the "work": gevent lets everything else go on
        total += sum(range(task.size * step))
        task.progress = step * 100 // STEPS
        if step == STEPS:
            task.state, task.result = "done", f"sum = {total}"
        task.save(update_fields=["progress", "state", "result"])
        Group(group_for(task.pk)).send({"text": json.dumps(task.as_dict())})


@router.websocket("ws/tasks/<int:pk>/")
class TaskProgress(JsonWebsocketConsumer):
    def connect(self):
        pk = self.scope["url_route"]["kwargs"]["pk"]
        task = Task.objects.filter(pk=pk).first()
        if task is None:
            self.close()
            return
        self.channel_layer.group_add(group_for(pk), self.channel_name)
        self.accept()
        self.send_json(task.as_dict())  # where it is now; the group sends the rest

    def disconnect(self, code):
        pk = self.scope["url_route"]["kwargs"]["pk"]
        self.channel_layer.group_discard(group_for(pk), self.channel_name)
