"""Every Context function, chosen by the input's first word."""
import json
import os
import statistics
import sys

import isms
import helper  # a module of the upload, beside handler.py


def initialize(ctx):
    ctx.state = {"greeting": ctx.param("greeting") or "Hi", "calls": 0}


def execute(ctx, data: bytes):
    ctx.state["calls"] += 1
    word, _, rest = data.decode().partition(" ")
    if word == "hello":
        return f"{ctx.state['greeting']}, {rest or 'world'}! ({helper.shout('python')})"
    if word == "calls":
        return str(ctx.state["calls"])
    if word == "meta":
        return json.dumps({k: ctx.meta(k) for k in ("method", "path", "trigger", "project", "doee")})
    if word == "respond":
        ctx.set_status(201)
        ctx.set_header("x-answer", "42")
        for level in ("debug", "info", "warn", "error"):
            ctx.log(level, f"logged at {level}")
        return b"made"
    if word == "sql":
        ctx.sql("CREATE TABLE IF NOT EXISTS readings (device TEXT, value REAL)")
        ctx.sql("INSERT INTO readings VALUES ($1, $2)", ["d1", 21.5])
        ctx.sql("INSERT INTO readings VALUES ($1, $2)", ["d1", 23.5])
        rows = ctx.sql("SELECT value FROM readings WHERE device = $1", ["d1"])
        return str(statistics.mean(r["value"] for r in rows))
    if word == "sql-error":
        try:
            ctx.sql("SELECT * FROM no_such_table")
        except isms.Error as e:
            return f"refused: {e}"
    if word == "docs":
        ctx.docs("insert", "notes", {"device": "d1", "text": "hi"})
        found = ctx.docs("find", "notes", {"filter": {"device": "d1"}})
        return json.dumps([d["text"] for d in found])
    if word == "publish":
        ctx.publish("plant/alerts", rest or "alert")
        try:
            ctx.publish("elsewhere/x", b"no")
        except isms.Error as e:
            return f"published; elsewhere: {e}"
    if word == "invoke":
        callee, _, data = rest.partition(" ")
        return b"python got " + ctx.invoke(callee, data)
    if word == "raise":
        raise ValueError("the reading is out of range")
    if word == "exit":
        sys.exit(3)
    if word == "os-exit":
        os._exit(1)
    if word == "loop":
        while True:
            pass
    if word == "files":
        try:
            open("/etc/passwd").read()
            return "READ /etc/passwd"
        except OSError as e:
            return f"refused: {e.strerror}"
    if word == "net":
        import socket
        try:
            socket.create_connection(("1.1.1.1", 80), timeout=2)
            return "CONNECTED"
        except OSError as e:
            return f"refused: {e.strerror or e}"
    if word == "secret":
        value = ctx.secret(rest)
        return f"{len(value)} bytes ending in {value[-2:]}"
    if word == "nothing":
        return None
    return data
