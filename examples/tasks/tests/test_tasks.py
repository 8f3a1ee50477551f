"""The tasks example, for real: a view queues a background task, a socket shows its progress."""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar

from websockets.sync.client import connect


def start_task(base_url: str, size: int) -> int:
    """Press "Start a task" on the index page; returns the task id it redirects to."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    page = opener.open(base_url + "/", timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    data = urllib.parse.urlencode({"csrfmiddlewaretoken": token, "size": size}).encode()
    response = opener.open(
        urllib.request.Request(base_url + "/", data=data, headers={"Referer": base_url + "/"}),
        timeout=10,
    )
    return int(re.search(r"/tasks/(\d+)/$", response.url).group(1))


def test_the_page_shows_the_background_tasks_progress_until_done(example_server):
    server = example_server("tasks", "taskssite", "TASKS_DB", TASK_STEP_SECONDS="0.1")
    task_id = start_task(server.url, size=10)
    status, page = server.get(f"/tasks/{task_id}/")
    assert status == 200 and f"/ws/tasks/{task_id}/" in page
    seen = []
    with connect(
        server.ws_url + f"/ws/tasks/{task_id}/", additional_headers={"Origin": server.url}
    ) as ws:
        while not seen or seen[-1]["state"] != "done":
            seen.append(json.loads(ws.recv(timeout=10)))
    progress = [event["progress"] for event in seen]
    assert progress == sorted(progress) and progress[-1] == 100
    assert seen[-1]["result"] == f"sum = {sum(sum(range(10 * step)) for step in range(1, 6))}"


def test_two_tasks_run_side_by_side_and_the_site_answers_meanwhile(example_server):
    server = example_server("tasks", "taskssite", "TASKS_DB", TASK_STEP_SECONDS="0.1")
    first, second = start_task(server.url, 3), start_task(server.url, 4)
    assert server.get("/")[0] == 200
    for task_id in (first, second):
        with connect(
            server.ws_url + f"/ws/tasks/{task_id}/", additional_headers={"Origin": server.url}
        ) as ws:
            event = json.loads(ws.recv(timeout=10))
            while event["state"] != "done":
                event = json.loads(ws.recv(timeout=10))
            assert event["progress"] == 100


def test_an_unknown_task_is_refused(example_server):
    from websockets.exceptions import InvalidStatus

    server = example_server("tasks", "taskssite", "TASKS_DB", TASK_STEP_SECONDS="0.1")
    try:
        connect(server.ws_url + "/ws/tasks/999/", additional_headers={"Origin": server.url})
    except InvalidStatus as exc:
        assert exc.response.status_code == 403
    else:
        raise AssertionError("a socket for an unknown task was accepted")
