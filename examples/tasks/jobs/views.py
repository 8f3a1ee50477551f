from django.shortcuts import get_object_or_404, redirect, render

from wsbridge import Channel

from .models import Task


def index(request):
    if request.method == "POST":
        task = Task.objects.create(size=int(request.POST.get("size") or 10))
        Channel("tasks.run").send({"id": task.pk})  # queued; the view returns at once
        return redirect("detail", pk=task.pk)
    return render(request, "jobs/index.html", {"tasks": Task.objects.order_by("-pk")[:20]})


def detail(request, pk):
    return render(request, "jobs/detail.html", {"task": get_object_or_404(Task, pk=pk)})
