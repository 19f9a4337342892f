"""Nobody in: a web page on another origin can neither write into the assistant nor read from it, and a
foreign Host name (DNS rebinding) is refused. Plain HTTP for the rules, headless Chromium for the attack."""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from starlette.testclient import TestClient
from test_serve_browser import CHROMIUM, DRIVER, browser  # noqa: F401  (the fixture)

from rag.config import load_settings
from rag.serve import ServeOptions, create_app, start_in_thread
from rag.serve.options import options_from

PLANTED = {"prompt": "What is the Glimmerquark?", "response": "The Glimmerquark is a planted record."}
LINE = json.dumps(PLANTED) + "\n"
ASK = [{"role": "user", "content": "Remember the Glimmerquark."}]
CHAT = {"model": "shvayambhu", "user": "victim", "messages": ASK}


@pytest.fixture
def served(make_assistant):
    assistant = make_assistant()
    with start_in_thread(assistant, ServeOptions(cors_origins=["http://notes.example"])) as running:
        running.assistant = assistant
        yield running


def planted(assistant) -> bool:
    """Whether the planted record reached the store."""
    return any("Glimmerquark" in h.prompt for h in assistant.search("What is the Glimmerquark?", 3))


def test_foreign_host_names_are_refused_loopback_ones_answered(served):
    port = served.port
    for host in ("evil.example.com", f"evil.example.com:{port}", "10.0.0.7", "127.0.0.1.nip.io"):
        r = httpx.get(served.url + "/v1/models", headers={"Host": host})
        assert r.status_code == 403 and "allowed_hosts" in r.json()["error"]["message"], host
        assert r.json()["error"]["code"] == "host_not_allowed"
    assert "allowed_hosts" in httpx.get(served.url + "/api/tags", headers={"Host": "evil.example.com"}).json()["error"]
    assert httpx.get(served.url + "/", headers={"Host": "evil.example.com"}).status_code == 403
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", f"[::1]:{port}", "127.0.0.2"):
        assert httpx.get(served.url + "/v1/models", headers={"Host": host}).status_code == 200, host


def test_allowed_hosts_and_servers_beyond_loopback(make_assistant):
    assistant = make_assistant()
    section = load_settings(environ={"SHVAYAMBHU_SERVE_ALLOWED_HOSTS": "notes.lan; box.lan"}).serve
    assert options_from(section).allowed_hosts == ["notes.lan", "box.lan"]  # [serve] allowed_hosts reaches the app
    loop = TestClient(create_app(assistant, options_from(section), warm=False))
    assert loop.get("/healthz", headers={"Host": "notes.lan:8765"}).status_code == 200
    assert loop.get("/healthz", headers={"Host": "other.lan"}).status_code == 403
    assert loop.get("/healthz").status_code == 403  # TestClient's own Host is "testserver"
    wide = TestClient(create_app(assistant, ServeOptions(host="0.0.0.0", api_key="k"), warm=False))
    assert wide.get("/healthz", headers={"Host": "my-box.lan"}).status_code == 200  # the key guards it


def test_foreign_origins_are_refused_own_and_configured_ones_answered(served):
    url = served.url
    for origin in ("http://evil.example", "null", f"http://localhost:{served.port}", "http://127.0.0.1:1"):
        r = httpx.post(url + "/v1/search", json={"query": "immune"}, headers={"Origin": origin})
        assert r.status_code == 403 and r.json()["error"]["code"] == "origin_not_allowed", origin
        assert httpx.get(url + "/v1/sessions", headers={"Origin": origin}).status_code == 403
    own = httpx.post(url + "/v1/search", json={"query": "immune", "k": 1}, headers={"Origin": url})
    assert own.status_code == 200 and len(own.json()) == 1
    configured = httpx.post(url + "/v1/search", json={"query": "immune"}, headers={"Origin": "http://notes.example"})
    assert configured.status_code == 200 and configured.headers["access-control-allow-origin"] == "http://notes.example"


@pytest.mark.parametrize(
    "path", ["/v1/chat/completions", "/v1/embeddings", "/v1/search", "/api/chat", "/api/generate", "/api/embed"]
)
def test_state_changing_routes_take_json_only(served, fake_ollama, path):
    body = json.dumps({**CHAT, "prompt": "Remember the Glimmerquark.", "input": "x", "query": "x"})
    asked = len(fake_ollama.bodies("/api/chat")) + len(fake_ollama.bodies("/api/generate"))
    for ctype in ("text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", None):
        headers = {"Content-Type": ctype} if ctype else {}
        r = httpx.post(served.url + path, content=body.encode(), headers=headers)
        assert r.status_code == 415, (path, ctype, r.text)
        message = r.json()["error"] if path.startswith("/api/") else r.json()["error"]["message"]
        assert "application/json" in message
    assert len(fake_ollama.bodies("/api/chat")) + len(fake_ollama.bodies("/api/generate")) == asked
    assert "victim" not in served.assistant.sessions()


def test_uploads_of_simple_types_need_a_custom_header_or_the_own_page(served):
    url = served.url + "/v1/ingest?name=planted.jsonl"
    for headers in ({"Content-Type": "text/plain"}, {}, {"Content-Type": "application/x-www-form-urlencoded"}):
        r = httpx.post(url, content=LINE.encode(), headers=headers)
        assert r.status_code == 415 and "X-Shvayambhu-" in r.json()["error"]["message"]
    files = {"file": ("planted.jsonl", LINE.encode(), "application/octet-stream")}
    assert httpx.post(served.url + "/v1/ingest", files=files).status_code == 415
    assert not planted(served.assistant)
    assert not (served.assistant.settings.data_dir / "uploads" / "planted.jsonl").exists()
    ok = httpx.post(served.url + "/v1/ingest", files=files, headers={"Origin": served.url}, timeout=60)
    assert ok.status_code == 200 and ok.json()["added"] == 1 and planted(served.assistant)
    again = httpx.post(url, content=LINE.encode(), headers={"Content-Type": "text/plain", "X-Shvayambhu-Session": "a"})
    assert again.status_code == 200 and again.json()["unchanged"] == 1


ATTACK = """<!doctype html><html><body>
<iframe name="sink"></iframe>
<form id="form" method="POST" enctype="text/plain" target="sink" action="TARGET/v1/ingest?name=form.jsonl">
<input type="hidden" name='{"prompt": "What is the Glimmerquark form?", "response": "Planted by a form.", "x": "'
 value='"}'></form>
<script>
const T = "TARGET";
const line = LINE;
const chat = CHAT;
async function attempt(label, path, init) {
  try { const r = await fetch(T + path, init); return [label, r.type + ":" + r.status]; }
  catch (e) { return [label, "error"]; }
}
async function run() {
  const form = new FormData();
  form.append("file", new Blob([line]), "planted.jsonl");
  const post = (ctype, body) => ({method: "POST", mode: "no-cors", body,
                                  headers: ctype ? {"Content-Type": ctype} : {}});
  const out = [];
  out.push(await attempt("ingest text", "/v1/ingest?name=planted.jsonl", post("text/plain", line)));
  out.push(await attempt("ingest form", "/v1/ingest?name=p2.jsonl", post("application/x-www-form-urlencoded", line)));
  out.push(await attempt("ingest blob", "/v1/ingest?name=p3.jsonl", post(null, new Blob([line]))));
  out.push(await attempt("ingest multipart", "/v1/ingest", post(null, form)));
  for (const p of ["/v1/chat/completions", "/api/chat", "/api/generate", "/v1/search", "/v1/embeddings",
                   "/api/embed", "/api/show"]) {
    out.push(await attempt(p, p, post("text/plain", chat)));
  }
  out.push(await attempt("delete", "/v1/sessions/default/memories", {method: "DELETE", mode: "no-cors"}));
  out.push(await attempt("read memories", "/v1/sessions/victim/memories", {}));
  out.push(await attempt("read status", "/v1/status", {}));
  out.push(await attempt("read json", "/v1/search", {method: "POST", body: chat,
                                                       headers: {"Content-Type": "application/json"}}));
  document.getElementById("form").submit();
  window.results = out;
}
run();
</script></body></html>"""
REACHING = 14  # requests that reach the server: 4 uploads, 7 routes, 2 reads, the form (the rest never leave)


def serve_page(html: str) -> ThreadingHTTPServer:
    """A page on another local port, as any web site the user visits could be."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802  (http.server's naming)
            data = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs apt packages chromium and chromium-driver")
def test_a_page_on_another_origin_writes_and_reads_nothing(browser, served, fake_ollama, caplog):  # noqa: F811
    caplog.set_level(logging.WARNING, logger="rag.serve.guard")
    before = (served.assistant.collection().count(), sorted(served.assistant.sessions()))
    asked = len(fake_ollama.bodies("/api/chat")) + len(fake_ollama.bodies("/api/generate"))
    html = ATTACK.replace("TARGET", served.url).replace("LINE", json.dumps(LINE)).replace("CHAT", json.dumps(CHAT))
    page = serve_page(html)
    try:
        browser.get(f"http://127.0.0.1:{page.server_address[1]}/")
        deadline = time.monotonic() + 30
        while not browser.execute_script("return window.results") or len(refusals(caplog)) < REACHING:
            assert time.monotonic() < deadline, (browser.execute_script("return window.results"), refusals(caplog))
            time.sleep(0.1)
        results = dict(browser.execute_script("return window.results"))
    finally:
        page.shutdown()
    assert all(results[k] == "error" for k in ("delete", "read memories", "read status", "read json")), results
    assert all(v in ("opaque:0", "error") for v in results.values()), results  # nothing readable came back
    assert len(refusals(caplog)) == REACHING and all("web page at http://127.0.0.1:" in m for m in refusals(caplog))
    assert (served.assistant.collection().count(), sorted(served.assistant.sessions())) == before
    assert not planted(served.assistant)
    assert len(fake_ollama.bodies("/api/chat")) + len(fake_ollama.bodies("/api/generate")) == asked
    assert not list((served.assistant.settings.data_dir / "uploads").glob("*.jsonl"))


def refusals(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "rag.serve.guard"]
