"""A stand-in for Keystone's token API, served by real gunicorn in tests/server_stop.rs.

It answers the two calls every OpenStack service makes back to back against Keystone:
token issue (`POST /v3/auth/tokens` with a password JSON body -> 201 with the token in
`X-Subject-Token`) and token validation (`GET /v3/auth/tokens` with `X-Subject-Token` ->
200). Tokens are signed with a key every instance shares, as Fernet keys are shared
between Keystone nodes, so any instance validates a token another one issued: a request
that vipgate sends to another server is answered as Keystone would answer it.

`GET /healthz` answers 200 for vipgate's http check. Every response says which instance
made it (`X-Instance`, from the environment variable `WSGI_INSTANCE`), so the test can
tell that the instance it stops really had traffic.
"""

import base64
import hashlib
import hmac
import json
import os
import time

INSTANCE = os.environ.get("WSGI_INSTANCE", "unnamed")
# Shared by every instance of one test run: the test passes the same value to all three.
KEY = os.environ.get("WSGI_TOKEN_KEY", "vipgate-test-key").encode()


def _sign(payload):
    mac = hmac.new(KEY, payload, hashlib.sha256).hexdigest()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=") + "." + mac


def _check(token):
    """The token's payload (a dict) when the signature holds, else None."""
    try:
        data, mac = token.split(".", 1)
        payload = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    except (ValueError, TypeError):
        return None
    want = hmac.new(KEY, payload, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, mac):
        return None
    return json.loads(payload)


def _answer(start_response, status, body, extra=()):
    raw = json.dumps(body).encode()
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(raw))),
        ("X-Instance", INSTANCE),
    ]
    headers.extend(extra)
    start_response(status, headers)
    return [raw]


def _issue(environ, start_response):
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    raw = environ["wsgi.input"].read(length) if length > 0 else b""
    try:
        user = json.loads(raw)["auth"]["identity"]["password"]["user"]
        name, password = user["name"], user["password"]
    except (ValueError, KeyError, TypeError):
        return _answer(start_response, "400 Bad Request", {"error": {"code": 400, "message": "malformed auth body"}})
    if password != "secret":
        return _answer(start_response, "401 Unauthorized", {"error": {"code": 401, "message": "bad password"}})
    # A little work, as Keystone does some (it checks a password hash): the request is
    # still in a worker thread for a moment, which a graceful stop has to wait for.
    time.sleep(0.003)
    issued = time.time()
    payload = json.dumps({"user": name, "issued": issued, "by": INSTANCE}, sort_keys=True).encode()
    token = _sign(payload)
    body = {"token": {"methods": ["password"], "user": {"name": name}, "issued_at": issued}}
    return _answer(start_response, "201 Created", body, [("X-Subject-Token", token)])


def _validate(environ, start_response):
    token = environ.get("HTTP_X_SUBJECT_TOKEN", "")
    if not environ.get("HTTP_X_AUTH_TOKEN"):
        return _answer(start_response, "401 Unauthorized", {"error": {"code": 401, "message": "no X-Auth-Token"}})
    data = _check(token)
    if data is None:
        return _answer(start_response, "404 Not Found", {"error": {"code": 404, "message": "token not found"}})
    time.sleep(0.001)
    body = {"token": {"methods": ["password"], "user": {"name": data["user"]}, "issued_by": data["by"]}}
    return _answer(start_response, "200 OK", body, [("X-Subject-Token", token)])


def app(environ, start_response):
    method = environ.get("REQUEST_METHOD", "GET")
    path = environ.get("PATH_INFO", "/")
    if path == "/healthz":
        return _answer(start_response, "200 OK", {"status": "ok"})
    if path == "/v3/auth/tokens":
        if method == "POST":
            return _issue(environ, start_response)
        if method in ("GET", "HEAD"):
            return _validate(environ, start_response)
        return _answer(start_response, "405 Method Not Allowed", {"error": {"code": 405}}, [("Allow", "GET, HEAD, POST")])
    return _answer(start_response, "404 Not Found", {"error": {"code": 404, "message": "no such path"}})
