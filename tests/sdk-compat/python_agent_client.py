"""microsandbox's own Python AgentClient (PyPI `microsandbox`) against a moat relay socket.

Usage: python_agent_client.py SOCKET

Checks what the generation-10 issue asks of a real SDK client: the client connects and reads
the relay's ready frame (generation 10, with exec_limits), a ping round trips, an exec runs to its
exit code, and an exec whose output is larger than the agent's output window completes only
because this client acknowledges output (the generation-10 flow control really negotiated).
Each check raises on failure; the script exits non-zero with the failing check's message.
"""

import asyncio
import sys

import cbor2
from microsandbox.agent import (
    FLAG_SESSION_START,
    FLAG_TERMINAL,
    AgentClient,
)


def envelope(t, payload):
    return cbor2.dumps({"v": 10, "t": t, "p": cbor2.dumps(payload)})


def open_envelope(body):
    env = cbor2.loads(body)
    payload = env["p"]
    return env["v"], env["t"], cbor2.loads(payload) if payload else None


def exec_request(cmd, args):
    return {
        "cmd": cmd,
        "args": args,
        "env": [],
        "cwd": None,
        "user": None,
        "tty": False,
        "rows": 24,
        "cols": 80,
        "rlimits": [],
    }


def check(cond, what):
    if not cond:
        raise SystemExit(f"python AgentClient: {what}")


async def run_exec(client, cmd, args):
    """Runs one exec, acknowledging output; returns (exit code, stdout bytes, acks sent)."""
    stream = await client.stream(FLAG_SESSION_START, envelope("core.exec.request", exec_request(cmd, args)))
    stdout = bytearray()
    charge = 0
    acks = 0
    code = None
    async for frame in stream:
        v, t, p = open_envelope(frame["body"])
        check(v == 10, f"{t} came with generation {v}, not 10")
        if t == "core.exec.started":
            # Non-interactive: close stdin at once, as the SDK's `null` stdin mode does.
            await client.send(stream.id, 0, envelope("core.exec.stdin", {"data": b""}))
        elif t in ("core.exec.stdout", "core.exec.stderr"):
            if t == "core.exec.stdout":
                stdout += p["data"]
            charge += len(p["data"]) + 256
            await client.send(stream.id, 0, envelope("core.exec.output.ack", {"consumed": charge}))
            acks += 1
        elif t == "core.exec.exited":
            check(frame["flags"] & FLAG_TERMINAL, "exec.exited is not terminal")
            code = p["code"]
        elif t in ("core.exec.failed", "core.error"):
            raise SystemExit(f"python AgentClient: exec {cmd} failed: {p}")
    return code, bytes(stdout), acks


async def never_ack(client, size):
    """An exec whose client does not ack: the agent must stop at its window and hold the exit.

    Returns the charge received before 2 s of quiet, and how the exec ended once killed and acked.
    """
    stream = await client.stream(FLAG_SESSION_START, envelope("core.exec.request", exec_request("head", ["-c", str(size), "/dev/zero"])))
    charge = 0
    pending = None
    while True:
        pending = pending or asyncio.ensure_future(stream.next())
        done, _ = await asyncio.wait({pending}, timeout=2)
        if not done:
            break
        frame, pending = pending.result(), None
        check(frame is not None, "the stream ended before its exit was acknowledged")
        _, t, p = open_envelope(frame["body"])
        if t == "core.exec.started":
            await client.send(stream.id, 0, envelope("core.exec.stdin", {"data": b""}))
        elif t in ("core.exec.stdout", "core.exec.stderr"):
            charge += len(p["data"]) + 256
        else:
            check(t != "core.exec.exited", "exec.exited arrived before its output was acknowledged")
            raise SystemExit(f"python AgentClient: unexpected {t} {p}")
    stalled_at = charge
    await client.send(stream.id, 0, envelope("core.exec.signal", {"signal": 9}))
    await client.send(stream.id, 0, envelope("core.exec.output.ack", {"consumed": charge}))
    while True:
        frame, pending = await pending, None
        check(frame is not None, "the stream ended without an exit")
        _, t, p = open_envelope(frame["body"])
        if t in ("core.exec.stdout", "core.exec.stderr"):
            charge += len(p["data"]) + 256
            await client.send(stream.id, 0, envelope("core.exec.output.ack", {"consumed": charge}))
        elif t == "core.exec.exited":
            return stalled_at, f"exit code {p['code']}"
        pending = asyncio.ensure_future(stream.next())


async def main(socket):
    client = await AgentClient.connect(socket, timeout=10)
    try:
        v, t, ready = open_envelope(client.ready_bytes())
        check(t == "core.ready", f"the first frame is {t}, not core.ready")
        check(v == 10, f"the agent announces generation {v}, not 10")
        limits = ready.get("exec_limits")
        check(isinstance(limits, dict), f"core.ready has no exec_limits: {sorted(ready)}")
        window = limits["output_limit"]
        print(f"ready: generation {v}, exec_limits {limits}")

        pong = await client.request(0, envelope("core.ping", {}))
        _, t, _ = open_envelope(pong["body"])
        check(t == "core.pong" and pong["flags"] & FLAG_TERMINAL, f"ping answered with {t}")
        print("ping: pong")

        code, out, _ = await run_exec(client, "sh", ["-c", "echo hello; exit 3"])
        check(code == 3 and out == b"hello\n", f"echo exec gave code {code}, stdout {out!r}")
        print("exec: hello, exit 3")

        size = 2 * window + 12345
        code, out, acks = await run_exec(client, "head", ["-c", str(size), "/dev/zero"])
        check(code == 0, f"the large exec exited with {code}")
        check(len(out) == size and out.count(0) == size, f"the large exec gave {len(out)} bytes, not {size}")
        print(f"flow control: {size} bytes past a {window}-byte window, {acks} acks, exit 0")

        charge, stalled = await never_ack(client, size)
        check(charge > window // 2, f"only {charge} of output charge arrived before the stall")
        check(charge <= window, f"the agent sent {charge} of output charge unacknowledged, past its {window} window")
        print(f"never acked: the agent stopped at {charge} of {window} charge and held the exit; after kill + ack: {stalled}")
    finally:
        await client.close()


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(sys.argv[1]), timeout=120))
