#!/usr/bin/env python3
"""A stock WebSocket client (the `websockets` package) against one Cirrus WebSocket
endpoint. Run by node/tests/transports.rs; exits non-zero with a FAIL line on the
first check that does not hold.

usage: ws_client.py WS_URL HTTP_URL PLAN_JSON_FILE MAX_BODY_BYTES

The plan file holds {"author": hex, "keys": [keys of docs already stored by that
author], "puts": [three signed records not stored yet]}. The puts go over HTTP, to
the same node, while this client watches for their `record` notifications.
"""

import asyncio
import json
import sys
import urllib.request

import websockets
from websockets.exceptions import ConnectionClosed

# Bound on every single wait; a wait that hits it fails the run.
TIMEOUT = 20


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def ok(msg):
    print(f"ok: {msg}", flush=True)


def request(id_, method, params=None):
    return json.dumps(
        {"jsonrpc": "2.0", "id": id_, "method": method, "params": params or {}}
    )


async def recv_json(ws, what):
    try:
        msg = await asyncio.wait_for(ws.recv(), TIMEOUT)
    except asyncio.TimeoutError:
        fail(f"no message within {TIMEOUT} s while waiting for {what}")
    if isinstance(msg, bytes):
        fail(f"the node sent a binary frame while waiting for {what}: {msg[:200]!r}")
    try:
        return json.loads(msg)
    except ValueError as e:
        fail(f"the node sent non-JSON text while waiting for {what}: {msg[:200]!r}: {e}")


def http_put(http_url, record):
    body = json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "put", "params": {"record": record}}
    ).encode()
    req = urllib.request.Request(
        http_url, data=body, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
        resp = json.load(r)
    if resp.get("result", {}).get("status") != "applied":
        fail(f"put over HTTP was not applied: {resp}")
    return resp["result"]["id"]


async def put(http_url, record):
    return await asyncio.to_thread(http_put, http_url, record)


async def many_in_flight(ws, plan):
    keys = plan["keys"]
    for i, key in enumerate(keys):
        await ws.send(request(i + 1, "get", {"author": plan["author"], "key": key}))
    got = {}
    while len(got) < len(keys):
        m = await recv_json(ws, f"answer {len(got) + 1} of {len(keys)} in flight")
        id_ = m.get("id")
        if id_ in got:
            fail(f"two answers with id {id_}: {got[id_]} and {m}")
        got[id_] = m
    for i, key in enumerate(keys):
        m = got.get(i + 1)
        if m is None:
            fail(f"no answer with id {i + 1}; got ids {sorted(got, key=str)}")
        record = (m.get("result") or {}).get("record") or {}
        if record.get("key") != key or record.get("author") != plan["author"]:
            fail(f"answer {i + 1} is not the record {key!r}: {m}")
    ok(f"{len(keys)} requests in flight on one connection, each answered once, by id")


async def wait_record(ws, want_id, forbidden, what):
    """Read until the `record` notification for `want_id`; anything else fails."""
    while True:
        m = await recv_json(ws, what)
        if m.get("method") != "record":
            fail(f"expected only record notifications while waiting for {what}: {m}")
        got = m["params"].get("id")
        if got in forbidden:
            fail(f"notification for {got} which was put while unsubscribed: {m}")
        if got == want_id:
            return m["params"]
        fail(f"notification for an unexpected record while waiting for {what}: {m}")


async def subscriptions(ws, http_url, plan):
    p1, p2, p3 = plan["puts"]

    await ws.send(request("sub", "subscribe", {"topics": ["records"]}))
    m = await recv_json(ws, "the subscribe answer")
    if m != {"jsonrpc": "2.0", "result": {"topics": ["records"]}, "id": "sub"}:
        fail(f"subscribe answered {m}")
    id1 = await put(http_url, p1)
    note = await wait_record(ws, id1, set(), "the notification for the first put")
    for field in ("author", "kind", "key", "seq", "value", "sig"):
        if note.get(field) != p1[field]:
            fail(f"notification field {field}: {note.get(field)!r} != {p1[field]!r}")
    ok("subscribed; a put over HTTP came as a record notification with the record")

    await ws.send(request("unsub", "unsubscribe", {"topics": ["records"]}))
    m = await recv_json(ws, "the unsubscribe answer")
    if m != {"jsonrpc": "2.0", "result": {"topics": []}, "id": "unsub"}:
        fail(f"unsubscribe answered {m}")
    id2 = await put(http_url, p2)
    # A round trip after the put; a notification for p2 would fail here or below.
    await ws.send(request("db", "getdbhash"))
    while True:
        m = await recv_json(ws, "the getdbhash answer after unsubscribing")
        if m.get("method") is not None:
            fail(f"notification after unsubscribe: {m}")
        if m.get("id") == "db":
            break
        fail(f"unexpected message: {m}")
    await ws.send(request("sub2", "subscribe", {"topics": ["records"]}))
    m = await recv_json(ws, "the second subscribe answer")
    if m.get("id") != "sub2" or m.get("result") != {"topics": ["records"]}:
        fail(f"second subscribe answered {m}")
    id3 = await put(http_url, p3)
    await wait_record(ws, id3, {id2}, "the notification for the put after resubscribing")
    ok("unsubscribe stopped notifications; subscribing again restarted them")


async def binary_frame(ws):
    await ws.send(b'{"jsonrpc":"2.0","id":7,"method":"getdbhash","params":{}}')
    m = await recv_json(ws, "the answer to a binary frame")
    if m.get("error", {}).get("code") != -32700 or m.get("id") is not None:
        fail(f"a binary frame should get a parse error with id null: {m}")
    # The connection still serves text frames.
    await ws.send(request(8, "getdbhash"))
    m = await recv_json(ws, "getdbhash after the binary frame")
    if m.get("id") != 8 or "root" not in m.get("result", {}):
        fail(f"getdbhash after the binary frame: {m}")
    ok("a binary frame got a JSON-RPC parse error, and the connection kept working")


async def sizes(url, max_body):
    # Just under the limit: served.
    near = request(9, "getdbhash")
    near += " " * (max_body - 64 - len(near))
    async with websockets.connect(url, open_timeout=TIMEOUT) as ws:
        await ws.send(near)
        m = await recv_json(ws, "the answer to a message just under the limit")
        if m.get("id") != 9 or "result" not in m:
            fail(f"a {len(near)}-byte message under the {max_body}-byte limit: {m}")
    ok(f"a {len(near)}-byte message (limit {max_body}) is served")

    over = request(10, "getdbhash")
    over += " " * (max_body + 1000 - len(over))
    async with websockets.connect(url, open_timeout=TIMEOUT) as ws:
        await ws.send(over)
        try:
            m = await recv_json(ws, "the answer to an oversize message")
        except ConnectionClosed as e:
            code = e.rcvd.code if e.rcvd is not None else None
            if code != 1009:
                fail(f"a {len(over)}-byte message closed the connection with {code}, not 1009 ({e})")
            ok(f"a {len(over)}-byte message closed the connection with 1009 ({e})")
        else:
            fail(f"an oversize message was answered: {m}")


async def main():
    if len(sys.argv) != 5:
        fail(f"usage: {sys.argv[0]} WS_URL HTTP_URL PLAN_JSON_FILE MAX_BODY_BYTES")
    url, http_url, plan_file, max_body = sys.argv[1:]
    with open(plan_file) as f:
        plan = json.load(f)

    async with websockets.connect(url, open_timeout=TIMEOUT) as ws:
        await many_in_flight(ws, plan)
        await subscriptions(ws, http_url, plan)
        await binary_frame(ws)
    await sizes(url, int(max_body))

    # The node keeps serving, on a new connection.
    async with websockets.connect(url, open_timeout=TIMEOUT) as ws:
        await ws.send(request(11, "getdbhash"))
        m = await recv_json(ws, "getdbhash on a new connection")
        if m.get("id") != 11 or "root" not in m.get("result", {}):
            fail(f"getdbhash on a new connection: {m}")
    ok("a new connection is served")


asyncio.run(main())
