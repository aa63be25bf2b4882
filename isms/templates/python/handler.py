"""%NAME%: an ISMS Doee in Python.

Test it here with `python3 -m unittest`; deploy it with
`isms deploy . --project <project> --wait`.
"""


def initialize(ctx):
    """Once per Worker, before its first invocation (optional)."""
    ctx.state = {"greeting": ctx.param("greeting") or "Hello"}


def execute(ctx, data: bytes):
    """Once per invocation: the HTTP body or MQTT payload in, the answer out
    (bytes, or a str sent as UTF-8). An exception fails the invocation."""
    name = data.decode().strip() or "world"
    ctx.log("info", f"greeted {name}")
    return f"{ctx.state['greeting']}, {name}!"


def terminate(ctx):
    """Before the Worker stops (optional)."""
