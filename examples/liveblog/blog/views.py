from django import forms
from django.shortcuts import redirect, render

from .models import Post


class PostForm(forms.ModelForm):
    class Meta:
        model = Post
        fields = ["title", "body"]


def index(request):
    return render(request, "blog/index.html", {"posts": Post.objects.all()[:50]})


def write(request):
    # A demo: anyone may write. A real blog would use the admin or @login_required.
    form = PostForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        form.save()
        return redirect("write")
    return render(request, "blog/write.html", {"form": form})
