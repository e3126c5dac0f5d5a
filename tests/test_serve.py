"""``recbole-srgnn serve``: the real server in a subprocess on a free local port, checked with a
standard-library HTTP client against the in-process Recommender, plus its refusals and exits."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tiny_data import write_tiny_benchmark
from recbole_srgnn.errors import InputError
from recbole_srgnn.recommend import Recommender
from recbole_srgnn import serve_cli
from recbole_srgnn.serve_cli import build_parser
from recbole_srgnn.service import ServiceLimits, create_app
from recbole_srgnn.training import runs as training_runs

REPO = Path(__file__).resolve().parents[1]
LIMITS = ["--max_k", "20", "--max_session_items", "50", "--max_batch", "5",
          "--max_body_bytes", "20000"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("serve")
    write_tiny_benchmark(root / "data", "tiny", seed=3, sessions=(60, 12, 12), length=(2, 7))
    settings = {"data_path": str(root / "data"), "checkpoint_dir": str(root / "saved"),
                "show_progress": False, "embedding_size": 8, "epochs": 2}
    out = root / "bundle"
    training_runs.run("SRGNN", "tiny", config_dict=settings, quiet=True,
                      result_file=root / "srgnn.json", export=out)
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``python -m recbole_srgnn.cli serve`` in a subprocess, its output in files."""

    def __init__(self, folder: Path, logs: Path, *options: str) -> None:
        self.port = free_port()
        logs.mkdir(parents=True, exist_ok=True)
        self.stdout, self.stderr = logs / f"{self.port}.out", logs / f"{self.port}.err"
        command = [sys.executable, "-m", "recbole_srgnn.cli", "serve", "--model", str(folder),
                   "--port", str(self.port), *options]
        with open(self.stdout, "w") as out, open(self.stderr, "w") as err:
            self.process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=err,
                                            env={**os.environ, "PYTHONPATH": str(REPO)})

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited {self.process.returncode}: {self.output()}")
            try:
                if self.call("GET", "/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"server not ready after {timeout} s: {self.output()}")

    def call(self, method: str, path: str, body=None, headers: dict | None = None):
        """(status, JSON answer) for one request; ``body``: bytes as they are, else JSON."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            if body is not None and not isinstance(body, bytes):
                body = json.dumps(body).encode()
                headers = {"Content-Type": "application/json", **(headers or {})}
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
            kind = response.getheader("content-type", "")
            return response.status, (json.loads(data) if "json" in kind else data.decode())
        finally:
            conn.close()

    def output(self) -> str:
        return self.stdout.read_text() + self.stderr.read_text()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture(scope="module")
def servers(bundle, tmp_path_factory):
    """The server the tests talk to (with small limits) and one with access logs, started
    together; both are stopped at the end whatever happens."""
    logs = tmp_path_factory.mktemp("logs")
    running = [Server(bundle, logs, *LIMITS), Server(bundle, logs, "--access_log")]
    try:
        for one in running:
            one.wait_ready()
        yield running
    finally:
        for one in running:
            one.stop()


@pytest.fixture(scope="module")
def server(servers) -> Server:
    return servers[0]


@pytest.fixture(scope="module")
def rec(bundle) -> Recommender:
    return Recommender.load(bundle)


def as_dict(result) -> dict:
    return {"items": result.items, "scores": result.scores,
            "unknown_items": result.unknown_items, "fallback": result.fallback}


def test_recommend_answers_equal_the_recommender(server, rec):
    cases = [(["3", "4", "5"], {}), (["3", "nope", 4], {"k": 7}), (["nope"], {"k": 3}),
             ([], {}), (["3", "4"], {"k": 20, "exclude_seen": True, "exclude": ["7", 8, "x"]})]
    fallbacks = 0
    for items, options in cases:
        status, answer = server.call("POST", "/recommend", {"items": items, **options})
        assert status == 200, answer
        expected = rec.recommend(items, options.get("k", 10),
                                 exclude_seen=options.get("exclude_seen", False),
                                 exclude=options.get("exclude", ()))
        assert answer == {**as_dict(expected), "model": "SRGNN"}
        fallbacks += answer["fallback"]
    assert fallbacks == 2 and not {"3", "4", "7", "8"} & set(answer["items"])


def test_batch_answers_equal_recommend_batch(server, rec):
    sessions = [["3", "4", "5"], ["nope", 12], [], [str(i) for i in range(1, 31)], ["9"]]
    status, answer = server.call("POST", "/recommend/batch",
                                 {"sessions": sessions, "k": 4, "exclude_seen": True})
    assert status == 200, answer
    expected = rec.recommend_batch(sessions, 4, exclude_seen=True)
    assert answer == {"results": [as_dict(r) for r in expected], "model": "SRGNN"}
    assert [r["fallback"] for r in answer["results"]] == [False, False, True, False, False]
    assert server.call("POST", "/recommend/batch", {"sessions": []}) == \
        (200, {"results": [], "model": "SRGNN"})


def test_concurrent_requests_get_the_recommenders_answers(server, rec):
    """Eight clients at once: the server scores waiting requests together (--batch_requests);
    each answer has the items of Recommender.recommend and its scores within 1e-5."""
    import threading

    sessions = [[str(1 + (i * 7 + j) % 40) for j in range(1 + i % 5)] for i in range(40)]
    answers: dict[int, tuple] = {}

    def client(first: int) -> None:
        for index in range(first, len(sessions), 8):
            answers[index] = server.call("POST", "/recommend", {"items": sessions[index], "k": 6})

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(answers) == list(range(len(sessions)))
    for index, (status, answer) in answers.items():
        assert status == 200, answer
        expected = rec.recommend(sessions[index], 6)
        assert answer["items"] == expected.items
        assert answer["scores"] == pytest.approx(expected.scores, abs=1e-5)
    assert server.call("GET", "/health")[1]["batch_requests"] == 32


def test_health_openapi_and_docs(server, bundle):
    status, health = server.call("GET", "/health")
    assert status == 200
    assert health["model"] == "SRGNN" and health["dataset"] == "tiny" and health["n_items"] == 30
    assert health["bundle"] == str(bundle)
    assert health["limits"] == {"max_k": 20, "max_session_items": 50, "max_batch": 5,
                                "max_body_bytes": 20000}
    assert health["versions"]["bundle"]["torch"] and health["versions"]["running"]["fastapi"]
    status, schema = server.call("GET", "/openapi.json")
    assert status == 200 and {"/recommend", "/recommend/batch", "/health"} <= set(schema["paths"])
    assert "RecommendRequest" in schema["components"]["schemas"]
    status, page = server.call("GET", "/docs")
    assert status == 200 and "swagger" in page.lower()
    ready = f"serving SRGNN (tiny, 30 items) on http://127.0.0.1:{server.port} — docs at /docs"
    assert server.stdout.read_text().splitlines() == [ready]


JSON = {"Content-Type": "application/json"}
BAD_REQUESTS = [
    ("POST", "/recommend", {"items": ["3"], "k": 0}, 422, "k must be from 1 to 30"),
    ("POST", "/recommend", {"items": ["3"], "k": -2}, 422, "k must be from 1 to 30"),
    ("POST", "/recommend", {"items": ["3"], "k": 31}, 422, "k must be from 1 to 30"),
    ("POST", "/recommend", {"items": ["3"], "k": 21}, 422, "at most 20 (--max_k)"),
    ("POST", "/recommend", {"items": ["3"], "k": "5"}, 422, "k: "),
    ("POST", "/recommend", {"items": ["3"], "k": 5.0}, 422, "k: "),
    ("POST", "/recommend", {"items": ["3"], "k": True}, 422, "k: "),
    ("POST", "/recommend", {"items": "355"}, 422, "items: "),
    ("POST", "/recommend", {"items": ["3", 4.5]}, 422, "items.1: must be a string or an integer"),
    ("POST", "/recommend", {"items": [None]}, 422, "items.0: must be a string or an integer"),
    ("POST", "/recommend", {"k": 3}, 422, "items: Field required"),
    ("POST", "/recommend", {"items": ["3"], "exclude_seen": "yes"}, 422, "exclude_seen: "),
    ("POST", "/recommend", {"items": ["3"], "exclude": "7"}, 422, "exclude: "),
    ("POST", "/recommend", {"items": ["3"], "kk": 3}, 422, "kk: is not a field"),
    ("POST", "/recommend", {"items": ["3"] * 51}, 422, "51 items, more than the limit of 50"),
    ("POST", "/recommend", [["3"]], 422, "must be a JSON object"),
    ("POST", "/recommend", b'{"items": ["3"', 400, "not valid JSON"),
    ("POST", "/recommend", b"", 422, "must be a JSON object"),
    ("POST", "/recommend", b'{"items": ' + b"[" * 5000, 400, "could not be parsed as JSON"),
    ("POST", "/recommend", b'{"items": [' + b"9" * 5000 + b"]}", 400, "could not be parsed"),
    ("POST", "/recommend/batch", {"sessions": [["3"]] * 6}, 422, "6 sessions, more than the "
                                                                "limit of 5 (--max_batch)"),
    ("POST", "/recommend/batch", {"sessions": [["3"], ["4"] * 51]}, 422, "51 items"),
    ("POST", "/recommend/batch", {"sessions": ["3", "4"]}, 422, "sessions.0: "),
    ("POST", "/recommend/batch", {"sessions": [["3"]], "k": 31}, 422, "k must be from 1"),
    ("GET", "/nothing/here", None, 404, "no such path '/nothing/here'"),
    ("GET", "/recommend", None, 405, "Method Not Allowed"),
]


@pytest.mark.parametrize("method, path, body, status, message", BAD_REQUESTS)
def test_bad_requests_get_a_4xx_naming_the_problem(server, method, path, body, status, message):
    headers = JSON if isinstance(body, bytes) else None
    got, answer = server.call(method, path, body, headers)
    assert (got, type(answer)) == (status, dict), answer
    assert message in answer["detail"] and "\n" not in answer["detail"]


def test_body_without_content_type_is_not_read_as_json(server):
    got, answer = server.call("POST", "/recommend", b'{"items": ["3"]}')
    assert got == 422 and "Content-Type: application/json" in answer["detail"]


def test_oversized_bodies_get_413_by_content_length_and_by_streamed_bytes(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:  # declares 10 MB and sends none of it: refused on the header alone
        conn.putrequest("POST", "/recommend")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(10_000_000))
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 413
        assert "limit is 20000 bytes" in json.loads(response.read())["detail"]
    finally:
        conn.close()

    session = json.dumps({"items": ["3"] * 8000}).encode()  # 48 KB
    status, answer = server.call("POST", "/recommend", session, JSON)  # sent whole, 413 after
    assert status == 413 and f"({len(session)} bytes;" in answer["detail"]
    for _ in range(5):  # chunked: no Content-Length, counted as it streams
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            conn.request("POST", "/recommend", headers=JSON, encode_chunked=True,
                         body=(session[i:i + 4096] for i in range(0, len(session), 4096)))
            response = conn.getresponse()
            assert response.status == 413
            assert "over 20000 bytes" in json.loads(response.read())["detail"]
        finally:
            conn.close()
    small = {"items": ["3"] * 40, "k": 2}  # a chunked body under the limit is read whole
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        data = json.dumps(small).encode()
        conn.request("POST", "/recommend", headers=JSON, encode_chunked=True,
                     body=iter([data[:7], data[7:]]))
        response = conn.getresponse()
        assert response.status == 200 and len(json.loads(response.read())["items"]) == 2
    finally:
        conn.close()
    assert server.call("GET", "/health")[0] == 200


def test_bad_bundle_port_in_use_and_bad_host_exit_2_with_one_line(server, bundle, tmp_path,
                                                                  capsys):
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    (broken / "weights.pt").write_bytes(b"not weights")
    with socket.socket() as taken:  # the bundle is checked before the port: never bound
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        runs = {"bundle": ["--model", str(broken), "--port", port],
                "missing": ["--model", str(tmp_path / "none"), "--port", port],
                "port": ["--model", str(bundle), "--port", str(server.port)],
                "host": ["--model", str(bundle), "--host", "203.0.113.7", "--port", port],
                "device": ["--model", str(bundle), "--device", "cuda:99", "--port", port],
                "no device": ["--model", str(bundle), "--device", "gpu", "--port", port]}
        expected = {"bundle": "weights.pt does not match its SHA-256",
                    "missing": "is not a folder",
                    "port": f"cannot listen on 127.0.0.1:{server.port}: Address already in use",
                    "host": "cannot listen on 203.0.113.7",
                    "device": "--device cuda:99: this machine has",
                    "no device": "--device 'gpu' is not a torch device"}
        for name, argv in runs.items():
            assert serve_cli.main(argv) == 2, name
            out, err = capsys.readouterr()
            assert out == "" and err.startswith("error: ") and err.count("\n") == 1, err
            assert expected[name] in err, err
    assert server.call("GET", "/health")[0] == 200  # the running server is untouched


@pytest.mark.parametrize("argv, message", [
    (["--model", "x", "--max_batch", "0"], "--max_batch: 0 is below 1"),
    (["--model", "x", "--port", "http"], "--port: 'http' is not a whole number"),
    (["--model", "x", "--port", "99999"], "--port: 99999 is above 65535"),
    (["--port", "8000"], "the following arguments are required: --model"),
])
def test_bad_options_are_one_line_errors(argv, message):
    with pytest.raises(InputError, match=message):
        build_parser().parse_args(argv)


def test_help_documents_the_limits_and_logging():
    text = " ".join(build_parser().format_help().split())
    for option in ("--max_k", "--max_session_items", "--max_batch", "--max_body_bytes",
                   "--access_log", "--threads", "--host", "--port"):
        assert option in text
    assert "default 200" in text and "1048576" in text and "413" in text


def check_stopped(server: Server, sig: int) -> list[str]:
    """``server`` exits with status 0 on ``sig`` and says so; its stdout lines."""
    assert server.stop(sig) == 0, server.output()
    lines = server.stdout.read_text().splitlines()
    assert lines[0].startswith("serving SRGNN") and lines[-1] == f"stopped ({sig.name})"
    assert "Traceback" not in server.stderr.read_text()
    return lines


def test_the_server_with_access_logs_stops_cleanly_on_sigint(servers):
    logged = servers[1]
    assert logged.call("POST", "/recommend", {"items": ["3"], "k": 2})[0] == 200
    lines = check_stopped(logged, signal.SIGINT)
    assert any('"POST /recommend HTTP/1.1" 200' in line for line in lines)  # --access_log


def asgi_call(app, method: str, path: str, body: bytes = b"") -> tuple[int, dict, str]:
    """One request straight through the ASGI app (no server), for the handlers a server test
    cannot reach: (status, JSON answer, the name of the exception the app raised or "")."""
    sent: list[dict] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "headers": [(b"content-type", b"application/json"),
                                          (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    raised = ""
    try:
        asyncio.run(app(scope, receive, send))
    except Exception as exc:  # noqa: BLE001 - an unexpected failure, re-raised for the log
        raised = type(exc).__name__
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(payload), raised


def test_recommender_input_errors_are_422_and_failures_a_json_500(rec, monkeypatch):
    app = create_app(rec, ServiceLimits())
    body = json.dumps({"items": ["3"], "k": 2}).encode()
    assert asgi_call(app, "POST", "/recommend", body)[::2] == (200, "")

    def refuse(*args, **kwargs):
        raise InputError("session: refused\nfor a reason")

    monkeypatch.setattr(rec, "recommend_batch", refuse)  # how the micro-batcher scores
    assert asgi_call(app, "POST", "/recommend", body) == \
        (422, {"detail": "session: refused for a reason"}, "")
    monkeypatch.setattr(rec, "recommend", refuse)  # each request alone
    assert asgi_call(create_app(rec, ServiceLimits(), batch_requests=1), "POST", "/recommend",
                     body) == (422, {"detail": "session: refused for a reason"}, "")

    def fail(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(rec, "recommend_batch", fail)
    # a JSON 500 without the traceback; the framework re-raises the error for the server's log
    assert asgi_call(app, "POST", "/recommend/batch", json.dumps({"sessions": [["3"]]}).encode()) \
        == (500, {"detail": "internal error (RuntimeError)"}, "RuntimeError")


def test_limits_are_checked():
    with pytest.raises(InputError, match="max_batch must be a whole number >= 1"):
        ServiceLimits(max_batch=0)
    with pytest.raises(InputError, match="max_k must be"):
        ServiceLimits(max_k=True)


def test_the_server_stops_cleanly_on_sigterm(server):
    """Last in this file: it stops the module's server (the fixture's teardown then has
    nothing left to stop)."""
    lines = check_stopped(server, signal.SIGTERM)
    assert len(lines) == 2  # no access log by default
