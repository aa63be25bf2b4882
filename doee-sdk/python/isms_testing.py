"""A fake ISMS context for testing Python Doees on your machine, offline:
what the platform gives `execute(ctx, data)`, with SQL on an in-memory
SQLite database, documents in memory, and what the Doee logs, publishes,
sets as status and headers recorded for your assertions.

    ctx = FakeContext(params={"limit": "25"}, meta={"method": "POST"})
    handler.initialize(ctx)
    assert handler.execute(ctx, b"21.5") == b"ok"
    assert ctx.published == [("demo/alerts", b"...")]
"""
import json
import re
import sqlite3
import sys
import types

if "isms" not in sys.modules:
    # The platform's `isms` module, as far as a Doee uses it outside calls.
    isms = types.ModuleType("isms")

    class Error(Exception):
        """A call the platform refused (SQL, documents, publish)."""

    isms.Error = Error
    sys.modules["isms"] = isms

Error = sys.modules["isms"].Error


class FakeContext:
    """Stands in for the platform's context in unit tests."""

    def __init__(self, params=None, meta=None, topics=None, secrets=None, doees=None):
        self._params = dict(params or {})
        self._secrets = dict(secrets or {})
        # invoke(name, data) calls doees[name](data): fakes of the callees.
        self._doees = dict(doees or {})
        self._meta = dict(meta or {})
        self._topics = list(topics or [])
        self.status = 200
        self.written = []
        self.headers = {}
        self.logs = []
        self.published = []
        self._db = sqlite3.connect(":memory:")
        self._db.row_factory = sqlite3.Row
        self._docs = {}

    def param(self, name):
        return self._params.get(name)

    def meta(self, key):
        return self._meta.get(key)

    def secret(self, name):
        if name not in self._secrets:
            raise Error(f"project has no secret {name}")
        return self._secrets[name]

    def invoke(self, doee, data):
        if doee not in self._doees:
            raise Error(f"no Doee {doee} in this fake: pass doees={{'{doee}': ...}}")
        if isinstance(data, str):
            data = data.encode()
        output = self._doees[doee](bytes(data))
        return output.encode() if isinstance(output, str) else bytes(output)

    def write(self, data):
        self.written.append(data.encode() if isinstance(data, str) else bytes(data))

    def set_status(self, status):
        if not 100 <= status <= 999:
            raise ValueError(f"an HTTP status is 100 to 999, not {status}")
        self.status = status

    def set_header(self, name, value):
        self.headers[name.lower()] = value

    def log(self, level, message):
        if level not in ("error", "warn", "warning", "info", "debug"):
            raise ValueError(f'a log level is "error", "warn", "info" or "debug", not "{level}"')
        self.logs.append((level, message))

    def sql(self, query, params=None):
        # `$1`-style parameters, as on the platform.
        query = re.sub(r"\$(\d+)", r"?\1", query)
        try:
            cursor = self._db.execute(query, list(params or []))
        except sqlite3.Error as e:
            raise Error(str(e)) from None
        self._db.commit()
        return [dict(row) for row in cursor.fetchall()]

    def docs(self, op, collection, body=None):
        body = json.loads(json.dumps(body or {}))
        docs = self._docs.setdefault(collection, [])
        matches = lambda doc: all(doc.get(k) == v for k, v in body.get("filter", {}).items())
        if op == "insert":
            body.setdefault("_id", str(len(docs) + 1))
            docs.append(body)
            return {"id": body["_id"]}
        if op == "find":
            found = [d for d in docs if matches(d)]
            return found[: body["limit"]] if "limit" in body else found
        if op == "update":
            changed = [d.update(body.get("update", {}).get("$set", {})) for d in docs if matches(d)]
            return {"matched": len(changed)}
        if op == "delete":
            kept = [d for d in docs if not matches(d)]
            self._docs[collection] = kept
            return {"deleted": len(docs) - len(kept)}
        raise Error(f"unknown document operation {op!r}")

    def publish(self, topic, payload):
        if isinstance(payload, str):
            payload = payload.encode()
        if self._topics and not any(_topic_allowed(f, topic) for f in self._topics):
            raise Error(f"may not publish on `{topic}`")
        self.published.append((topic, bytes(payload)))


def _topic_allowed(pattern, topic):
    parts, wanted = pattern.split("/"), topic.split("/")
    for i, part in enumerate(parts):
        if part == "#":
            return True
        if i >= len(wanted) or (part != "+" and part != wanted[i]):
            return False
    return len(parts) == len(wanted)
