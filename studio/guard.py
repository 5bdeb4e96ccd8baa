"""An ASGI middleware in front of the studio's Gradio app: who may talk to it, and how much.

    policy = AccessPolicy.build(bind_host="127.0.0.1", extra_hosts=["gpu-box.lan"], auth=True)
    demo.launch(..., app_kwargs={"middleware": [Middleware(RequestGuard, policy=policy)]})

Every request passes these checks, in order, before Gradio sees it:

1. Host allow-list. A web page on any site can make the browser send requests to
   127.0.0.1:7860 under a name it controls (DNS rebinding): the Host header then
   carries that name. The studio answers only to loopback names, the address it
   was bound to, this machine's hostname when bound to all interfaces, IP
   literals (an address cannot be rebound), and the names the person added
   (`--allow-host`, TUNESMITH_ALLOW_HOSTS; `*` turns the check off, for proxies
   that rewrite Host). Anything else: 403 with the reason.
2. Origin check. A browser sends the Origin of the page that made a request on
   every POST (queue joins, uploads, logins, API calls) and websocket, and on
   every cross-origin read; it must be the studio's own (same host and port) or
   a name the person added. That refuses cross-site requests that would change
   something, and reads that Gradio's CORS rules would allow (they trust any
   localhost page, and any page at all when the studio is reached by another
   name than localhost). Requests without an Origin come from
   scripts or from the studio's own page loads, not from other sites, and pass.
3. With a login: before it, only the login page and its static files are served
   (everything else is 401), and the login page's embedded API description is
   replaced by null (Gradio embeds it, with example values that include the Runs
   table). Failed logins back off per client address (LoginThrottle).
4. Request bodies are capped: uploads at the --max-upload-mb limit (Gradio
   also checks each file while it streams it to disk), anything else at 16 MB.

What it does not know: client addresses behind a reverse proxy are the proxy's,
so the login back-off is then shared by everyone behind it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from starlette.requests import cookie_parser

ALLOW_HOSTS_ENV = "TUNESMITH_ALLOW_HOSTS"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})
MAX_BODY_BYTES = 16 * 2**20  # form values, chat histories: far below this; a 1 GB JSON body would sit in memory
MULTIPART_SLACK = 2**20  # multipart headers around an upload at the limit

# Served before login: the login page, its scripts, styles and icons, and the startup call
# Gradio's launch() makes to itself (it runs the startup events once; later calls answer false).
PUBLIC_PATHS = frozenset({"/", "/login", "/login/", "/logout", "/favicon.ico", "/robots.txt", "/manifest.json",
                          "/theme.css", "/gradio_api/theme.css", "/gradio_api/startup-events"})
PUBLIC_PREFIXES = ("/assets/", "/static/", "/svelte/", "/pwa_icon")

_API_INFO = re.compile(rb"(<script>window\.gradio_api_info = )(.*?)(;</script>)", re.S)

# Gradio's login form shows nothing for a 429; this shows the back-off's reason.
_LOGIN_WAIT_JS = b"""<script>(function(){const f=window.fetch;window.fetch=async function(){const r=await f.apply(this,arguments);
try{const a=arguments[0];const u=String((a&&a.url)||a);if(!/\\/login\\/?$/.test(u))return r;
let el=document.getElementById("ts-login-wait");if(r.status!==429){if(el)el.remove();return r;}
const d=await r.clone().json();if(!el){el=document.createElement("div");el.id="ts-login-wait";el.setAttribute("role","alert");
el.style.cssText="max-width:560px;margin:16px auto 0;background:#fee2e2;color:#991b1b;padding:10px 16px;"+
"border-radius:8px;font:14px system-ui,sans-serif";document.body.prepend(el);}el.textContent=d.detail;}catch(e){}
return r;};})();</script>"""


def env_allow_hosts() -> list[str]:
    return [h.strip() for h in os.environ.get(ALLOW_HOSTS_ENV, "").split(",") if h.strip()]


def _split_host(value: str) -> tuple[str, int | None]:
    """("name", port) from a Host header value ("[::1]:7860" -> ("::1", 7860)); ("", None) if unparseable."""
    try:
        parts = urlsplit("//" + value.strip())
        return (parts.hostname or "").rstrip(".").lower(), parts.port
    except ValueError:
        return "", None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


@dataclass
class LoginThrottle:
    """Failed logins per client address: the first `free` are free, then each wait doubles
    (1 s, 2 s, 4 s ... up to `cap_s`); a success clears the address. One attempt at a time
    per address, so a burst cannot slip many guesses in before the first failure counts."""

    free: int = 5
    cap_s: float = 300.0
    _failures: dict[str, int] = field(default_factory=dict)
    _until: dict[str, float] = field(default_factory=dict)
    _busy: set[str] = field(default_factory=set)

    def wait_s(self, client: str) -> float:
        return max(0.0, self._until.get(client, 0.0) - time.monotonic())

    def begin(self, client: str) -> str | None:
        """None when `client` may try now, else the reason it may not."""
        wait = self.wait_s(client)
        if wait > 0:
            return (f"Too many failed logins from your address: wait {wait:.0f} s before trying again "
                    "(each further failure doubles the wait).")
        if client in self._busy:
            return "One login at a time: wait for the previous attempt to finish."
        self._busy.add(client)
        return None

    def end(self, client: str, ok: bool | None) -> None:
        """Record the outcome (None: neither a success nor a wrong password)."""
        self._busy.discard(client)
        if ok:
            self._failures.pop(client, None)
            self._until.pop(client, None)
        elif ok is False:
            n = self._failures.get(client, 0) + 1
            self._failures[client] = n
            if n >= self.free:
                self._until[client] = time.monotonic() + min(self.cap_s, 2.0 ** (n - self.free))
            if len(self._failures) > 10_000:  # many addresses: forget those not waiting any more
                for c in [c for c in self._failures if self.wait_s(c) <= 0 and c != client]:
                    self._failures.pop(c, None)
                    self._until.pop(c, None)


@dataclass
class AccessPolicy:
    """What RequestGuard enforces; build() fills it from the launch settings."""

    hosts: frozenset[str]  # names the studio answers to
    trusted_hosts: frozenset[str]  # names the person added: also accepted as another Origin (proxies)
    any_host: bool = False
    auth: bool = False
    max_upload_bytes: int = 512 * 2**20
    throttle: LoginThrottle = field(default_factory=LoginThrottle)

    @classmethod
    def build(cls, bind_host: str, extra_hosts: list[str] | None = None, auth: bool = False,
              max_upload_mb: float = 512) -> "AccessPolicy":
        extra = [h.strip().lower().strip("[]") for h in [*(extra_hosts or []), *env_allow_hosts()] if h.strip()]
        hosts = set(LOOPBACK_NAMES) | {h for h in extra if h != "*"}
        bind = bind_host.strip().lower().strip("[]")
        if bind in WILDCARD_BINDS:
            # Reached from other machines by this machine's name (its addresses pass as IP literals).
            hosts |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        else:
            hosts.add(bind)
        return cls(hosts=frozenset(hosts), trusted_hosts=frozenset(h for h in extra if h != "*"),
                   any_host="*" in extra, auth=auth, max_upload_bytes=int(max_upload_mb * 2**20))

    def host_ok(self, name: str) -> bool:
        return self.any_host or name in self.hosts or (bool(name) and _is_ip(name))

    def origin_ok(self, origin: str, host_header: str) -> bool:
        """Same origin as the page the studio served (scheme's default port filled in), or a trusted name."""
        try:
            o = urlsplit(origin)
            o_name, o_port = (o.hostname or "").rstrip(".").lower(), o.port
        except ValueError:
            return False
        if o.scheme not in ("http", "https") or not o_name:
            return False  # "null" (sandboxed frames, file: pages) and anything odd
        if self.any_host or o_name in self.trusted_hosts:
            return True
        default = 443 if o.scheme == "https" else 80
        h_name, h_port = _split_host(host_header)
        return o_name == h_name and (o_port or default) == (h_port or default)


class RequestGuard:
    """The ASGI middleware; see the module docstring."""

    def __init__(self, app, policy: AccessPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        name, _ = _split_host(host)
        if not self.policy.host_ok(name):
            return await _refuse(scope, receive, send, 403, (
                f"Host {name or host!r} is not a name this studio answers to. If you reach it by that name, "
                f"start it with --allow-host {name or 'NAME'} (or set {ALLOW_HOSTS_ENV})."))
        origin = headers.get("origin")
        if origin is not None and not self.policy.origin_ok(origin, host):
            return await _refuse(scope, receive, send, 403, (
                f"Refused a request from the page at {origin}: the studio answers only its own pages."))
        if scope["type"] == "websocket":
            if self.policy.auth and not _logged_in(scope, headers):
                return await _refuse(scope, receive, send, 401, "Log in first.")
            await self.app(scope, receive, send)
            return

        path = scope.get("path", "")
        if self.policy.auth:
            if path.rstrip("/") == "/login" and scope.get("method") == "POST":
                return await self._login(scope, receive, send, headers)
            if not _logged_in(scope, headers):
                if path not in PUBLIC_PATHS and not path.startswith(PUBLIC_PREFIXES):
                    return await _refuse(scope, receive, send, 401, "Log in first: open the studio's page and sign in.")
                if path == "/" and scope.get("method") == "GET":
                    return await _login_page(self.app, scope, receive, send)
        limit = self._body_limit(path)
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            return await _refuse(scope, receive, send, 413, self._too_big(path))
        await self.app(scope, _capped(receive, limit), send)

    def _body_limit(self, path: str) -> int:
        if path.rstrip("/").endswith("/upload"):
            return self.policy.max_upload_bytes + MULTIPART_SLACK
        return MAX_BODY_BYTES

    def _too_big(self, path: str) -> str:
        if path.rstrip("/").endswith("/upload"):
            mb = self.policy.max_upload_bytes / 2**20
            return (f"The file is larger than this studio's upload limit ({mb:g} MB). Start the studio with "
                    "--max-upload-mb to raise it, or put the file in a folder and start it with --allow-dir FOLDER.")
        return f"Request body larger than {MAX_BODY_BYTES // 2**20} MB refused."

    async def _login(self, scope, receive, send, headers) -> None:
        client = (scope.get("client") or ("?", 0))[0]
        throttle = self.policy.throttle
        reason = throttle.begin(client)
        if reason:
            wait = max(1, round(throttle.wait_s(client)))
            return await _refuse(scope, receive, send, 429, reason, {"retry-after": str(wait)})
        status: list[int] = []

        async def watch(message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, _capped(receive, MAX_BODY_BYTES), watch)
        finally:
            code = status[0] if status else None
            throttle.end(client, True if code == 200 else False if code == 400 else None)


def _logged_in(scope, headers: dict[str, str]) -> bool:
    app = scope.get("app")
    tokens, cookie_id = getattr(app, "tokens", None), getattr(app, "cookie_id", None)
    if tokens is None or cookie_id is None:
        return False
    cookies = cookie_parser(headers.get("cookie", ""))
    token = cookies.get(f"access-token-{cookie_id}") or cookies.get(f"access-token-unsecure-{cookie_id}")
    return token is not None and token in tokens


def _capped(receive, limit: int):
    """receive() that ends the request (as a disconnect) once the body passes `limit` bytes;
    bodies without a Content-Length are counted as they stream."""
    seen = 0

    async def wrapped():
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                return {"type": "http.disconnect"}
        return message

    return wrapped


async def _refuse(scope, receive, send, status: int, reason: str, extra: dict[str, str] | None = None) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": reason[:120]})
        return
    body = json.dumps({"detail": reason}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    head += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


async def _login_page(app, scope, receive, send) -> None:
    """Gradio's page for a visitor not logged in, without its embedded API description."""
    start: dict = {}
    chunks: list[bytes] = []

    async def buffer(message) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, buffer)
    body = _API_INFO.sub(lambda m: m.group(1) + b"null" + m.group(3), b"".join(chunks))
    if b'"named_endpoints"' in body or b'"dependencies":[{' in body:
        # Gradio changed how it embeds these: serve nothing rather than the API.
        return await _refuse(scope, receive, send, 503, "The login page could not be served safely; "
                             "this Gradio version embeds the API in it. Tunesmith needs an update.")
    body = body.replace(b"</head>", _LOGIN_WAIT_JS + b"</head>", 1)
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": start.get("status", 200), "headers": headers})
    await send({"type": "http.response.body", "body": body})
