"""Any answer from a backend: every fault the proxy injects (and every shape error) becomes a
temporary or permanent error of our own hierarchy, naming the endpoint; never a traceback.

The upstream here is a tiny JSON server; the same proxy runs in front of the real Flink
REST API in test_flink_faults.py."""

from __future__ import annotations

import pytest

from harness_pool._errors import PermanentError, TemporaryError
from harness_pool.scheduler.backends._boundary import Conflict, HttpApi, NotFound, dig
from harness_pool.testing._http import HttpFake, JsonHandler
from harness_pool.testing.fault_proxy import Fault, FaultProxy, Rule


class Upstream(HttpFake):
    def __init__(self) -> None:
        self.hits: list[str] = []
        fake = self

        class Handler(JsonHandler):
            def route(self, method: str) -> None:
                fake.hits.append(f"{method} {self.path}")
                if self.path.startswith("/status/"):
                    code = int(self.path.rsplit("/", 1)[-1])
                    self.reply(code, {"errors": [f"upstream said {code}"]})
                elif self.path == "/partial":
                    self.reply(200, {"jobs": [{"id": "a"}]})
                else:
                    self.reply(200, {"jobs": [{"id": "a", "status": "RUNNING"}] * 50})

        super().__init__(Handler, "upstream")


@pytest.fixture
def proxied():
    with Upstream() as upstream, FaultProxy(upstream.url) as proxy:
        yield upstream, proxy, HttpApi(proxy.url, "Flink REST", timeout=1.0)


@pytest.mark.parametrize(("fault", "reached", "message"), [
    (Fault.RESET_BEFORE, False, "unreachable or the answer broke off"),
    (Fault.RESET_AFTER, True, "unreachable or the answer broke off"),
    (Fault.ERROR_500, False, "HTTP 500: injected failure"),
    (Fault.HTML_200, False, "answered 200 with a body that is not JSON (text/html"),
    (Fault.SLOW, True, "unreachable or the answer broke off: ReadTimeout"),
    (Fault.TRUNCATE, True, "unreachable or the answer broke off"),
], ids=[f.value for f in Fault])
def test_every_fault_is_a_temporary_error_naming_the_endpoint(proxied, fault, reached,
                                                              message):
    upstream, proxy, api = proxied
    proxy.add(Rule("POST", "^/jobs$", fault, delay=2.0))
    with pytest.raises(TemporaryError) as info:
        api.call("POST", "/jobs", "list jobs", json={})
    assert message in str(info.value) and str(info.value).startswith("list jobs: ")
    assert (upstream.hits == ["POST /jobs"]) is reached, upstream.hits
    assert api.call("POST", "/jobs", "list jobs", json={}).body["jobs"], "next one is clean"


@pytest.mark.parametrize(("status", "error"), [
    (404, NotFound), (409, Conflict), (400, PermanentError), (503, TemporaryError),
    (429, TemporaryError)], ids=["404", "409", "400", "503", "429"])
def test_one_mapping_of_status_codes(proxied, status, error):
    _, _, api = proxied
    with pytest.raises(error, match=f"HTTP {status}: upstream said {status}"):
        api.call("GET", f"/status/{status}", "ask")


def test_a_json_answer_missing_a_field_names_the_field(proxied):
    _, _, api = proxied
    body = api.call("GET", "/partial", "state of job a").body
    with pytest.raises(TemporaryError, match=r"state of job a: the answer lacks jobs.0.status"):
        dig(body, "jobs", 0, "status", what="state of job a")


def test_random_faults_are_repeatable_with_a_seed():
    with Upstream() as upstream:
        runs = []
        for _ in range(2):
            with FaultProxy(upstream.url, rate=0.5, seed=7) as proxy:
                api = HttpApi(proxy.url, "Flink REST", timeout=1.0)
                for _ in range(12):
                    try:
                        api.call("GET", "/jobs", "list jobs")
                    except TemporaryError:
                        pass
                runs.append([f for _, _, f in proxy.injected])
        assert runs[0] == runs[1] and len(set(runs[0])) >= 3
