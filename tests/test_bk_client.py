"""Unit behaviour of launcher.client (HTTP answers simulated with `responses`)."""

from __future__ import annotations

import hashlib
import json
import logging

import pytest
import requests
import responses
from responses import matchers

from launcher.client import (
    ArtifactError,
    AuthError,
    BuildkiteClient,
    ConfigError,
    NotFound,
    RateLimited,
    ServerError,
    TransportError,
    ValidationFailed,
)
from launcher.errors import InfraError, UsageError

API = "https://bk.example.test/v2"
PIPE = f"{API}/organizations/acme/pipelines/bench"
TOKEN = "bkua_secret_token_0123456789abcdef"


class FakeTime:
    """A clock that only moves when the client sleeps (records the sleeps)."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s


@pytest.fixture
def ft() -> FakeTime:
    return FakeTime()


@pytest.fixture
def client(ft: FakeTime) -> BuildkiteClient:
    return BuildkiteClient(TOKEN, org="acme", pipeline="bench", base_url=API,
                           clock=ft.clock, sleep=ft.sleep, env={})


def rl_headers(remaining: int, reset: int = 30, user: bool = True) -> dict[str, str]:
    h = {"RateLimit-Remaining": "150", "RateLimit-Limit": "200", "RateLimit-Reset": str(reset)}
    if user:
        h.update({"RateLimit-User-Remaining": str(remaining), "RateLimit-User-Limit": "50",
                  "RateLimit-User-Reset": str(reset)})
    return h


# -- configuration ----------------------------------------------------------------------------


def test_settings_come_from_the_environment() -> None:
    env = {"BUILDKITE_API_TOKEN": TOKEN, "BUILDKITE_API_URL": "http://127.0.0.1:1/v2/",
           "BUILDKITE_ORG": "o", "BUILDKITE_PIPELINE": "p"}
    c = BuildkiteClient(env=env)
    assert (c.base_url, c.org, c.pipeline) == ("http://127.0.0.1:1/v2", "o", "p")
    assert BuildkiteClient(env={"BUILDKITE_API_TOKEN": TOKEN}).base_url == \
        "https://api.buildkite.com/v2"


def test_missing_token_or_pipeline_is_a_usage_error() -> None:
    with pytest.raises(ConfigError, match="BUILDKITE_API_TOKEN"):
        BuildkiteClient(env={})
    c = BuildkiteClient(TOKEN, env={})
    with pytest.raises(ConfigError, match="BUILDKITE_ORG"):
        c.get_build(1)
    assert issubclass(ConfigError, UsageError)


@responses.activate
def test_bearer_auth_and_timeout_on_every_call(client: BuildkiteClient) -> None:
    responses.get(f"{PIPE}/builds/7", json={"number": 7, "state": "running"},
                  match=[matchers.header_matcher({"Authorization": f"Bearer {TOKEN}"}),
                         matchers.query_param_matcher({"exclude_pipeline": "true"})])
    assert client.get_build(7)["state"] == "running"
    assert responses.calls[0].request.req_kwargs["timeout"] == (5.0, 30.0)


@responses.activate
def test_create_build_body(client: BuildkiteClient) -> None:
    responses.post(f"{PIPE}/builds", status=201, json={"number": 1, "state": "scheduled"})
    client.create_build(commit="HEAD", branch="main", message="m", env={"A": "1"},
                        meta_data={"kitebench_id": "x"})
    body = json.loads(responses.calls[0].request.body)
    assert body == {"commit": "HEAD", "branch": "main", "message": "m", "env": {"A": "1"},
                    "meta_data": {"kitebench_id": "x"}}


@responses.activate
def test_list_builds_filters_and_follows_link_pages(client: BuildkiteClient) -> None:
    page2 = f"{PIPE}/builds?page=2&per_page=100"
    responses.get(f"{PIPE}/builds", json=[{"number": 3}, {"number": 2}],
                  headers={"Link": f'<{page2}>; rel="next", <{page2}>; rel="last"'},
                  match=[matchers.query_param_matcher(
                      {"per_page": "100", "exclude_pipeline": "true", "meta_data[batch]": "b1",
                       "state[]": ["running", "scheduled"]})])
    responses.get(page2, json=[{"number": 1}],
                  match=[matchers.query_param_matcher({"page": "2", "per_page": "100"})])
    builds = client.list_builds(meta_data={"batch": "b1"}, state=["running", "scheduled"])
    assert [b["number"] for b in builds] == [3, 2, 1]


@responses.activate
def test_link_to_another_host_is_not_followed_with_the_token(client: BuildkiteClient) -> None:
    responses.get(f"{PIPE}/builds", json=[{"number": 1}],
                  headers={"Link": '<https://evil.example/v2/x?page=2>; rel="next"'})
    with pytest.raises(InfraError, match="refusing to send the API token"):
        client.list_builds()
    assert len(responses.calls) == 1


# -- typed errors -----------------------------------------------------------------------------


@responses.activate
def test_401_403_404_422_are_typed(client: BuildkiteClient) -> None:
    responses.get(f"{PIPE}/builds/1", status=401, json={"message": "Authentication required"})
    responses.get(f"{PIPE}/builds/2", status=403,
                  json={"message": "Your token is missing the `read_builds` scope"})
    responses.get(f"{PIPE}/builds/3", status=404, json={"message": "No build found"})
    responses.put(f"{PIPE}/builds/4/cancel", status=422,
                  json={"message": "Build can't be canceled because it's passed"})
    with pytest.raises(AuthError) as e1:
        client.get_build(1)
    assert e1.value.status == 401 and e1.value.exit_code == 2 and e1.value.scope is None
    with pytest.raises(AuthError) as e2:
        client.get_build(2)
    assert e2.value.scope == "read_builds" and "lacks the read_builds scope" in e2.value.message
    with pytest.raises(NotFound) as e3:
        client.get_build(3)
    assert e3.value.status == 404 and isinstance(e3.value, UsageError)
    with pytest.raises(ValidationFailed) as e4:
        client.cancel_build(4)
    assert "because it's passed" in e4.value.message
    assert e4.value.body == {"message": "Build can't be canceled because it's passed"}
    assert len(responses.calls) == 4  # none of these is retried


# -- retries ----------------------------------------------------------------------------------


@responses.activate
def test_get_retries_5xx_with_backoff(client: BuildkiteClient, ft: FakeTime) -> None:
    url = f"{PIPE}/builds/1"
    responses.get(url, status=502, body="bad gateway")
    responses.get(url, status=503, json={"message": "down"})
    responses.get(url, json={"number": 1, "state": "passed"})
    assert client.get_build(1)["state"] == "passed"
    assert len(responses.calls) == 3
    assert ft.sleeps == [0.5, 1.0]


@responses.activate
def test_get_gives_up_after_max_retries(client: BuildkiteClient) -> None:
    responses.get(f"{PIPE}/builds/1", status=500, json={"message": "boom"})
    with pytest.raises(ServerError) as e:
        client.get_build(1)
    assert e.value.status == 500 and len(responses.calls) == client.max_retries + 1


@responses.activate
def test_post_is_never_retried_on_5xx(client: BuildkiteClient) -> None:
    responses.post(f"{PIPE}/builds", status=500, json={"message": "oops"})
    with pytest.raises(ServerError):
        client.create_build()
    assert len(responses.calls) == 1


@responses.activate
def test_connection_errors(client: BuildkiteClient) -> None:
    url = f"{PIPE}/builds/1"
    responses.get(url, body=requests.ConnectionError("reset by peer"))
    responses.get(url, json={"number": 1})
    assert client.get_build(1)["number"] == 1
    responses.post(f"{PIPE}/builds", body=requests.ConnectionError("reset by peer"))
    with pytest.raises(TransportError) as e:
        client.create_build()
    assert e.value.ambiguous  # the launcher must look the build up before re-posting


@responses.activate
def test_one_retry_policy_governs_api_and_storage_calls(ft: FakeTime) -> None:
    from launcher.retry import RetryPolicy

    c = BuildkiteClient(TOKEN, org="acme", pipeline="bench", base_url=API, clock=ft.clock,
                        sleep=ft.sleep, env={}, retry=RetryPolicy(max_retries=1, backoff_s=2.0))
    responses.get(f"{PIPE}/builds/1", status=500, json={"message": "boom"})
    with pytest.raises(ServerError):
        c.get_build(1)
    store = "https://store.example.test/obj/abc?X-Amz-Signature=s1"
    dl = f"{PIPE}/builds/1/jobs/j1/artifacts/a1/download"
    responses.get(dl, status=302, headers={"Location": store})
    responses.get(store, status=503, body=b"slow down")
    with pytest.raises(ArtifactError, match="HTTP 503"):
        c.download_artifact({"download_url": dl, "state": "finished"})
    # one retry each (API GET, storage GET), both after the policy's first backoff
    assert [call.request.url.split("?")[0] for call in responses.calls] == [
        f"{PIPE}/builds/1", f"{PIPE}/builds/1", dl, store.split("?")[0], store.split("?")[0]]
    assert ft.sleeps == [2.0, 2.0]


# -- rate limits ------------------------------------------------------------------------------


@responses.activate
def test_429_waits_the_reset_then_succeeds(client: BuildkiteClient, ft: FakeTime) -> None:
    url = f"{PIPE}/builds/1"
    responses.get(url, status=429, headers=rl_headers(0, reset=17),
                  json={"message": "rate limited", "scope": "user", "limit": 50,
                        "current": 51, "reset": 17})
    responses.get(url, json={"number": 1}, headers=rl_headers(49, reset=60))
    assert client.get_build(1) == {"number": 1}
    assert ft.sleeps and ft.sleeps[0] == pytest.approx(17.0)
    assert len(responses.calls) == 2


@responses.activate
def test_429_wait_is_capped_and_bounded(ft: FakeTime) -> None:
    c = BuildkiteClient(TOKEN, org="acme", pipeline="bench", base_url=API, clock=ft.clock,
                        sleep=ft.sleep, env={}, max_rate_wait_s=20, max_rate_waits=2)
    responses.get(f"{PIPE}/builds/1", status=429, headers={"Retry-After": "3600"},
                  json={"message": "slow down"})
    with pytest.raises(RateLimited):
        c.get_build(1)
    assert len(responses.calls) == 3
    assert max(ft.sleeps) <= 20


@responses.activate
def test_gate_holds_requests_when_the_window_is_spent(client: BuildkiteClient,
                                                      ft: FakeTime) -> None:
    url = f"{PIPE}/builds/1"
    responses.get(url, json={"number": 1}, headers=rl_headers(0, reset=12))
    responses.get(url, json={"number": 1}, headers=rl_headers(49, reset=60))
    client.get_build(1, priority=True)
    assert ft.sleeps == []
    client.get_build(1, priority=True)  # no 429 needed: the headers said the window is spent
    assert ft.sleeps == [pytest.approx(12.0)]


@responses.activate
def test_gate_keeps_a_reserve_for_priority_requests(client: BuildkiteClient,
                                                    ft: FakeTime) -> None:
    url = f"{PIPE}/builds/1"
    responses.get(url, json={"number": 1}, headers=rl_headers(3, reset=40))
    client.get_build(1)
    client.get_build(1, priority=True)  # polls may use the reserve
    assert ft.sleeps == []
    client.get_build(1)  # bulk work waits for the next window (reserve is 4)
    assert ft.sleeps == [pytest.approx(40.0)]


# -- artifacts and logs -----------------------------------------------------------------------


@responses.activate
def test_download_is_two_step_without_authorization(client: BuildkiteClient) -> None:
    data = b'{"success": true}'
    store = "https://store.example.test/obj/abc?X-Amz-Signature=s1"
    dl = f"{PIPE}/builds/1/jobs/j1/artifacts/a1/download"
    responses.get(dl, status=302, headers={"Location": store}, json={"url": store})
    responses.get(store, body=data)
    art = {"path": "result.json", "state": "finished", "download_url": dl,
           "sha1sum": hashlib.sha1(data).hexdigest()}
    assert client.download_artifact(art) == data
    assert responses.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert "Authorization" not in responses.calls[1].request.headers


@responses.activate
def test_download_drops_credentials_of_an_injected_session(ft: FakeTime) -> None:
    session = requests.Session()
    session.auth = ("user", "pass")
    session.headers["Authorization"] = "Bearer session-default"
    c = BuildkiteClient(TOKEN, org="acme", pipeline="bench", base_url=API, session=session,
                        clock=ft.clock, sleep=ft.sleep, env={})
    store = "https://store.example.test/obj/abc?X-Amz-Signature=s1"
    moved = "https://store2.example.test/obj/abc?X-Amz-Signature=s2"
    dl = f"{PIPE}/builds/1/jobs/j1/artifacts/a1/download"
    responses.get(dl, status=302, headers={"Location": store})
    responses.get(store, status=307, headers={"Location": moved})
    responses.get(moved, body=b"data")
    assert c.download_artifact({"download_url": dl, "state": "finished"}) == b"data"
    assert responses.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert [("Authorization" in call.request.headers) for call in responses.calls[1:]] == \
        [False, False]


@responses.activate
def test_download_checks_sha1(client: BuildkiteClient) -> None:
    store = "https://store.example.test/obj/abc?sig=1"
    dl = f"{PIPE}/builds/1/jobs/j1/artifacts/a1/download"
    responses.get(dl, status=302, json={"url": store})  # target only in the body
    responses.get(store, body=b"tampered")
    art = {"path": "result.json", "state": "finished", "download_url": dl,
           "sha1sum": hashlib.sha1(b"original").hexdigest()}
    with pytest.raises(ArtifactError, match="sha1sum mismatch"):
        client.download_artifact(art)
    with pytest.raises(ArtifactError, match="not finished"):
        client.download_artifact({**art, "state": "new"})


@responses.activate
def test_job_log_tail_uses_range(client: BuildkiteClient) -> None:
    url = f"{PIPE}/builds/1/jobs/j1/log"
    responses.get(url, status=206, body=b"line 9\nline 10\n", content_type="text/plain",
                  match=[matchers.header_matcher({"Range": "bytes=-1024",
                                                  "Accept": "text/plain"})])
    assert client.job_log(1, "j1", tail_bytes=1024) == "line 9\nline 10\n"


# -- secrets ----------------------------------------------------------------------------------


@responses.activate
def test_token_never_in_repr_errors_or_logs(client: BuildkiteClient,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # A server that echoes the token back must not get it into our messages either.
    responses.get(f"{PIPE}/builds/1", status=401, json={"message": f"bad token {TOKEN}"})
    responses.get(f"{PIPE}/builds/2", status=500, json={"message": "boom"})
    responses.get(f"{PIPE}/builds/3", body=requests.ConnectionError(f"failed {TOKEN}"))
    errors = []
    for n in (1, 2, 3):
        with pytest.raises(InfraError) as e:
            client.get_build(n)
        errors.append(e.value)
    texts = [str(e) for e in errors] + [repr(e) for e in errors] + [e.message for e in errors]
    texts += [repr(client), str(client._auth), repr(client._auth), caplog.text]
    for text in texts:
        assert TOKEN not in text
    assert "redacted" in repr(client)
