"""The webhook receiver (real HTTP on 127.0.0.1) and the waiter driven by its events, against the
stand-in Buildkite API sending webhooks the way Buildkite does (tests/bk_standin.py)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import threading
import time
from typing import Any

import pytest
import requests

from contract import codec
from launcher.base import StatusEvent
from launcher.buildkite import BuildkiteLauncher
from launcher.client import BuildkiteClient
from launcher.errors import UsageError
from launcher.events import BuildEvents
from launcher.webhook import WebhookAuth, WebhookServer, WebhookSettings
from tests.bk_standin import BuildPlan, StandIn

SECRET = "whsec-0123456789abcdef-not-a-real-one"
TOKEN = "whtok-abcdef0123456789-not-a-real-one"
SCALE = 20.0
PAYLOAD = {"lang": "py", "mode": "test", "main": "eval.py",
           "sources": {"eval.py": "print(1)", "submission.py": "x = 1\n"},
           "tests": [{"size": 1, "seed": 1}]}
EVENT = {"event": "build.finished",
         "build": {"id": "0b1c-uuid", "number": 7, "state": "passed", "web_url": "https://x"},
         "pipeline": {"slug": "gpu-bench"}, "sender": {"name": "someone"}}


def signed(body: bytes, secret: str = SECRET, stamp: float | None = None) -> str:
    t = str(int(time.time() if stamp is None else stamp))
    sig = hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"timestamp={t},signature={sig}"


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Any:
    auth = WebhookAuth(**request.param)
    events = BuildEvents(time_scale=SCALE)
    with WebhookServer(WebhookSettings(port=0, auth=auth), events) as srv:
        yield srv


def post(srv: WebhookServer, body: bytes, **headers: str) -> requests.Response:
    return requests.post(srv.url, data=body, headers={"Content-Type": "application/json",
                                                      **headers}, timeout=10)


# -- the receiver -----------------------------------------------------------------------------


@pytest.mark.parametrize("receiver", [{"secret": SECRET}], indirect=True)
def test_signature_mode_accepts_a_good_signature_once(receiver: WebhookServer) -> None:
    body = json.dumps(EVENT).encode()
    sig = signed(body)
    r = post(receiver, body, **{"X-Buildkite-Signature": sig})
    assert r.status_code == 200 and r.json() == {"ok": True, "duplicate": False}
    assert receiver.events.build("0b1c-uuid")["state"] == "passed"
    seq = receiver.events.seq
    again = post(receiver, body, **{"X-Buildkite-Signature": sig})  # the same delivery twice
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert receiver.events.seq == seq  # not handed to the waiter a second time


@pytest.mark.parametrize("receiver", [{"secret": SECRET}], indirect=True)
def test_signature_mode_refuses_bad_signatures(receiver: WebhookServer,
                                               caplog: pytest.LogCaptureFixture) -> None:
    body = json.dumps(EVENT).encode()
    caplog.set_level(logging.DEBUG)
    cases = {
        "wrong secret": signed(body, secret="guessed"),
        "other body": signed(body + b" "),
        "flipped hex": signed(body)[:-1] + ("0" if signed(body)[-1] != "0" else "1"),
        "malformed": "sha256=abc",
    }
    for what, header in cases.items():
        r = post(receiver, body, **{"X-Buildkite-Signature": header})
        assert r.status_code == 401, what
    assert post(receiver, body).status_code == 401  # no header at all
    assert post(receiver, body, **{"X-Buildkite-Token": SECRET}).status_code == 401  # wrong mode
    assert receiver.events.seq == 0 and receiver.app.refused == 6
    assert SECRET not in caplog.text


@pytest.mark.parametrize("receiver", [{"secret": SECRET}], indirect=True)
def test_signature_mode_refuses_a_replayed_old_timestamp(receiver: WebhookServer) -> None:
    body = json.dumps(EVENT).encode()
    old = signed(body, stamp=time.time() - 3600)  # correctly signed, an hour ago
    r = post(receiver, body, **{"X-Buildkite-Signature": old})
    assert r.status_code == 401 and "replay" in r.json()["error"]
    future = signed(body, stamp=time.time() + 3600)
    assert post(receiver, body, **{"X-Buildkite-Signature": future}).status_code == 401
    assert receiver.events.seq == 0


@pytest.mark.parametrize("receiver", [{"token": TOKEN}], indirect=True)
def test_token_mode(receiver: WebhookServer) -> None:
    body = json.dumps(EVENT).encode()
    assert post(receiver, body, **{"X-Buildkite-Token": "nope"}).status_code == 401
    assert post(receiver, body, **{"X-Buildkite-Token": TOKEN[:-1]}).status_code == 401
    assert post(receiver, body).status_code == 401
    assert receiver.events.seq == 0
    r = post(receiver, body, **{"X-Buildkite-Token": TOKEN})
    assert r.status_code == 200 and receiver.events.build("0b1c-uuid")["number"] == 7
    assert TOKEN not in r.text


@pytest.mark.parametrize("receiver", [{"token": TOKEN}], indirect=True)
def test_other_methods_bad_json_and_huge_bodies(receiver: WebhookServer) -> None:
    assert requests.get(receiver.url, timeout=10).status_code == 405
    assert post(receiver, b"[1, 2", **{"X-Buildkite-Token": TOKEN}).status_code == 400
    big = requests.post(receiver.url, data=b"x" * (2 * 1024 * 1024),
                        headers={"X-Buildkite-Token": TOKEN}, timeout=10)
    assert big.status_code == 413


def test_auth_needs_exactly_one_mode() -> None:
    with pytest.raises(UsageError, match="exactly one"):
        WebhookAuth()
    with pytest.raises(UsageError, match="exactly one"):
        WebhookAuth(token=TOKEN, secret=SECRET)
    assert "redacted" in repr(WebhookAuth(secret=SECRET)) and SECRET not in repr(
        WebhookAuth(secret=SECRET))


def test_events_keep_a_terminal_state_against_late_deliveries() -> None:
    ev = BuildEvents()
    ev.publish({"event": "build.finished", "build": {"id": "b", "state": "failed"}})
    ev.publish({"event": "job.finished", "build": {"id": "b", "state": "running"},
                "job": {"id": "j", "state": "failed", "exit_status": 3}})
    b = ev.build("b")
    assert b["state"] == "failed" and b["jobs"][0]["exit_status"] == 3


# -- the stand-in sends webhooks like Buildkite ------------------------------------------------


@pytest.mark.parametrize("mode", ["secret", "token"])
def test_standin_deliveries_pass_the_receiver(mode: str) -> None:
    events = BuildEvents()
    auth = WebhookAuth(**{mode: SECRET})
    with StandIn(time_scale=SCALE) as bk, \
            WebhookServer(WebhookSettings(port=0, auth=auth), events) as rx:
        bk.planner = lambda body: BuildPlan(queue_s=1, run_s=2)
        bk.add_webhook(rx.url, **{mode: SECRET},
                       events=("build.running", "job.finished", "build.finished"))
        client = BuildkiteClient(env=bk.env())
        build = client.create_build(env={"SUBMISSION_PAYLOAD": codec.encode(PAYLOAD)})
        deadline = time.monotonic() + 10
        # The stand-in records a delivery once the receiver has answered it.
        while len(bk.deliveries) < 4:
            assert time.monotonic() < deadline, bk.deliveries
            time.sleep(0.02)
        names = [d.event for d in bk.deliveries]
        assert sorted(names) == ["build.finished", "build.running", "job.finished", "ping"]
        assert events.build(build["id"])["state"] == "passed"
        assert all(d.status == 200 for d in bk.deliveries)
        assert events.build(build["id"])["jobs"][0]["exit_status"] == 0


# -- the waiter --------------------------------------------------------------------------------


def launcher_for(bk: StandIn, events: BuildEvents, **kw: Any) -> BuildkiteLauncher:
    client = BuildkiteClient(env=bk.env(), clock=bk.clock.now, sleep=bk.clock.sleep)
    return BuildkiteLauncher(client, queue="h100", gpu="H100", events=events, **kw)


def test_waiter_completes_on_the_event_without_waiting_for_a_poll() -> None:
    events = BuildEvents(time_scale=SCALE)
    seen: list[tuple[float, StatusEvent]] = []
    with StandIn(time_scale=SCALE) as bk, WebhookServer(
            WebhookSettings(port=0, auth=WebhookAuth(secret=SECRET)), events) as rx:
        bk.planner = lambda body: BuildPlan(queue_s=2, run_s=20)
        bk.add_webhook(rx.url, secret=SECRET)
        # Safety polls every hour (simulated): only the webhook can end this wait in time.
        launcher = launcher_for(bk, events, safety_interval_s=3600, poll_interval_s=3600)
        result = launcher.run(PAYLOAD, on_status=lambda e: seen.append((bk.clock.now(), e)))
        assert result.passed
        done = next(t for t, e in seen if e.state == "passed")
        assert done - bk.finished_at(1) < 2.0  # simulated seconds after the build finished
        polls = [e for e in bk.log if e.method == "GET" and "/artifacts" not in e.path]
        assert len(polls) == 1  # the first poll when following starts; no other
        assert bk.count(method="POST") == 1


def test_waiter_falls_back_to_polling_when_no_event_comes(
        caplog: pytest.LogCaptureFixture) -> None:
    events = BuildEvents(time_scale=SCALE)
    finish = {1: 12.0, 2: 40.0}
    seen: dict[int, float] = {}

    def record(e: StatusEvent) -> None:
        if e.state == "passed" and e.build_number not in seen:
            seen[e.build_number] = bk.clock.now()

    with StandIn(time_scale=SCALE) as bk, WebhookServer(
            WebhookSettings(port=0, auth=WebhookAuth(token=TOKEN)), events) as rx:
        n = iter((1, 2))
        bk.planner = lambda body: BuildPlan(queue_s=1, run_s=finish[next(n)] - 1)
        # Every delivery of these builds is lost (a firewall, a wrong URL after a move, ...).
        bk.add_webhook(rx.url, token=TOKEN, lose=lambda name, number: number is not None)
        launcher = launcher_for(bk, events, safety_interval_s=30, poll_interval_s=4,
                                webhook_grace_s=3)
        caplog.set_level(logging.WARNING, logger="kitebench.buildkite")
        results = launcher.submit_many([PAYLOAD, PAYLOAD], on_status=record)
        assert all(r.passed for r in results)
        assert any("no webhook event" in r.message for r in caplog.records)
        # Build 1 was found by the safety poll at 30 s and its event had not come 3 s later: from
        # then on normal polling (4 s) catches build 2 (done at 40 s) long before the next safety
        # poll (60 s) would have.
        # (slack: a few simulated seconds are a fraction of a real one on a busy machine)
        assert seen[1] - bk.finished_at(1) <= 30 + 6
        assert seen[2] - bk.finished_at(2) <= 4 + 6
        assert all(d.status == 0 for d in bk.deliveries if d.build is not None)


def test_a_poll_that_beats_a_late_delivery_is_not_a_miss(
        caplog: pytest.LogCaptureFixture) -> None:
    events = BuildEvents(time_scale=SCALE)
    with StandIn(time_scale=SCALE) as bk, WebhookServer(
            WebhookSettings(port=0, auth=WebhookAuth(token=TOKEN)), events) as rx:
        bk.planner = lambda body: BuildPlan(queue_s=1, run_s=5)
        # Each delivery leaves 0.75 real s (15 simulated s) late: the first poll after the build
        # ends (poll_interval_s=3) sees it finished before its build.finished arrives.
        bk.add_webhook(rx.url, token=TOKEN, delay_s=0.75)
        launcher = launcher_for(bk, events, safety_interval_s=3, poll_interval_s=3,
                                webhook_grace_s=60)
        caplog.set_level(logging.WARNING, logger="kitebench.buildkite")
        seen: list[float] = []
        result = launcher.run(PAYLOAD, on_status=lambda e: seen.append(bk.clock.now())
                              if e.state == "passed" else None)
        assert result.passed
        # The poll was first (the event leaves >= 15 s after the end) ...
        assert seen[0] - bk.finished_at(1) < 10
        # ... and a late delivery is not a lost one: no switch back to polling.
        assert not any("no webhook event" in r.message for r in caplog.records)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cli_wait_with_webhook_port(monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    from kitebench import main

    port = free_port()
    with StandIn(time_scale=SCALE) as bk:
        # Long enough for `wait` to be listening before the build ends (2 real seconds).
        bk.planner = lambda body: BuildPlan(queue_s=1, run_s=40)
        bk.add_webhook(f"http://127.0.0.1:{port}/", secret=SECRET)
        n = BuildkiteClient(env=bk.env()).create_build(
            env={"SUBMISSION_PAYLOAD": codec.encode(PAYLOAD)})["number"]
        for k, v in {**bk.env(), "KITEBENCH_WEBHOOK_SECRET": SECRET}.items():
            monkeypatch.setenv(k, v)
        t0 = time.monotonic()
        code = main(["wait", str(n), "--json", "--webhook-port", str(port)])
        out = capsys.readouterr().out
        assert code == 0 and json.loads(out)["success"] is True
        # A single build's safety poll comes every 120 s: only the webhook finishes this sooner.
        assert time.monotonic() - t0 < 60
        deadline = time.monotonic() + 10  # recorded once the receiver's answer is back
        while not any(d.event == "build.finished" for d in bk.deliveries):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert [d.status for d in bk.deliveries if d.event == "build.finished"] == [200]


def test_cli_webhook_serve_needs_a_token_or_secret(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from kitebench import main

    monkeypatch.delenv("KITEBENCH_WEBHOOK_TOKEN", raising=False)
    monkeypatch.delenv("KITEBENCH_WEBHOOK_SECRET", raising=False)
    code = main(["webhook", "serve", "--port", str(free_port())])
    err = capsys.readouterr().err
    assert code == 2 and "KITEBENCH_WEBHOOK_SECRET" in err and len(err.strip().splitlines()) == 1


def test_cli_webhook_serve_prints_verified_events(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from kitebench import webhook as webhook_cli

    monkeypatch.setenv("KITEBENCH_WEBHOOK_TOKEN", TOKEN)
    monkeypatch.delenv("KITEBENCH_WEBHOOK_SECRET", raising=False)
    port = free_port()
    stop = threading.Event()
    t = threading.Thread(target=webhook_cli.serve_until, args=("127.0.0.1", port, stop),
                         daemon=True)
    t.start()
    url = f"http://127.0.0.1:{port}/"
    body = json.dumps(EVENT).encode()
    deadline = time.monotonic() + 10
    while True:
        try:
            r = requests.post(url, data=body, headers={"X-Buildkite-Token": TOKEN}, timeout=5)
            break
        except requests.ConnectionError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert r.status_code == 200
    assert requests.post(url, data=body, headers={"X-Buildkite-Token": "x"},
                         timeout=5).status_code == 401
    stop.set()
    t.join(timeout=10)
    out = capsys.readouterr().out
    line = json.loads(out.strip().splitlines()[-1])
    assert line == {"event": "build.finished", "build": 7, "state": "passed",
                    "pipeline": "gpu-bench", "url": "https://x"}


def test_a_taken_port_is_a_usage_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        server = WebhookServer(WebhookSettings(port=port, auth=WebhookAuth(token=TOKEN)),
                               BuildEvents())
        with pytest.raises(UsageError, match=f"cannot listen on 127.0.0.1:{port}"):
            server.start()
