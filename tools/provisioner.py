#!/usr/bin/env python3
"""tools/provisioner.py: a small provisioner for orch's scaling policies.

It receives the scale.up / scale.down webhook events of one scaling policy over HTTPS,
verifies each signature (docs/api.md, "Verifying the signature"), and starts or stops
orch-agent processes on this machine until as many run as the event's desired_agents.
Python 3 standard library only. docs/operations.md ("Scaling policies") shows how to run
it; tests/integration/test-scaling.c runs it against real agents.

Each agent gets a state directory of its own, STATE_ROOT/NAME-PREFIX-N, enrolled once with
the enrolment token (`orch-agent register`) and reused by every later start. An agent is
started as `orch-agent run` with this process's environment (so ORCH_AGENT_* settings such
as ORCH_AGENT_EXEC_USER pass through) and its log in STATE_DIR/agent.log; it is stopped with
SIGTERM (it takes no new jobs, cancels its running ones, and exits), the most recently
started first. Events may arrive late or twice (retries, resends): each event id is applied
once, and an event older than the last one applied is ignored. Every 5 s the agents are
counted again, so one that died is replaced.
"""
import argparse
import collections
import datetime
import hashlib
import hmac
import http.server
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time

BODY_MAX = 65536  # an event is a few hundred bytes
TOLERANCE_S = 300  # a signature older (or newer) than this is a replay


def verify(secret: str, header: str, body: bytes, tolerance: int = TOLERANCE_S) -> bool:
    """docs/api.md's verifier: HMAC-SHA256 over "<t>.<raw body>", in constant time."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
    except ValueError:
        return False
    t, sig = fields.get("t", ""), fields.get("v1", "")
    if not t.isdigit() or abs(time.time() - int(t)) > tolerance:
        return False
    want = hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, sig)


def parse_time(s: str) -> datetime.datetime:
    """An event's created_at ("2026-12-01T01:40:00.2+00:00": PostgreSQL trims the fraction)."""
    m = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(.*)", s)
    if not m:
        raise ValueError("bad time " + s)
    frac = (m.group(2) or "0")[:6].ljust(6, "0")
    return datetime.datetime.fromisoformat(f"{m.group(1)}.{frac}{m.group(3)}")


class Agents:
    """The orch-agent processes this provisioner runs, and the count they should reach."""

    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.procs = {}  # index -> Popen
        self.desired = 0
        self.last_event = None  # created_at of the newest event applied
        self.seen = collections.OrderedDict()  # event ids applied, the last 1024

    def log(self, msg: str):
        print(f"provisioner: {msg}", file=sys.stderr, flush=True)

    def state_dir(self, i: int) -> str:
        return os.path.join(self.args.state_root, f"{self.args.name_prefix}-{i}")

    def enrol(self, i: int) -> bool:
        d = self.state_dir(i)
        # 0711, as orch-agent's own state directory: the job user passes through it to the
        # job's directory in work/ (docs/agent.md, "The agent's files").
        os.makedirs(d, mode=0o711, exist_ok=True)
        os.chmod(d, 0o711)
        if os.path.exists(os.path.join(d, "agent.json")):
            return True
        with open(self.args.enroll_token_file) as f:
            token = f.read().strip()
        cmd = [self.args.agent, "register", "--server", self.args.server,
               "--name", f"{self.args.name_prefix}-{i}", "--state-dir", d,
               "--slots", str(self.args.slots)]
        if self.args.ca_file:
            cmd += ["--ca-file", self.args.ca_file]
        for label in self.args.label:
            cmd += ["--label", label]
        # The token goes through the environment, not the process list.
        env = dict(os.environ, ORCH_AGENT_ENROLL_TOKEN=token)
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            self.log(f"op=enrol agent={i} error={r.stderr.strip()!r}")
            return False
        return True

    def start(self, i: int) -> bool:
        if not self.enrol(i):
            return False
        d = self.state_dir(i)
        env = dict(os.environ, ORCH_AGENT_STATE_DIR=d)
        with open(os.path.join(d, "agent.log"), "ab") as logf:
            self.procs[i] = subprocess.Popen([self.args.agent, "run"], env=env,
                                             stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
        self.log(f"op=start agent={i} pid={self.procs[i].pid}")
        return True

    def stop(self, i: int):
        p = self.procs.pop(i)
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        self.log(f"op=stop agent={i} pid={p.pid} exit={p.returncode}")

    def reconcile(self):
        """Start or stop agents until self.desired run (called with self.lock held)."""
        for i, p in list(self.procs.items()):
            if p.poll() is not None:
                self.log(f"op=exited agent={i} pid={p.pid} exit={p.returncode}")
                del self.procs[i]
        while len(self.procs) < self.desired:
            i = next(n for n in range(len(self.procs) + 1) if n not in self.procs)
            if not self.start(i):
                break
        while len(self.procs) > self.desired:
            self.stop(max(self.procs))

    def apply(self, event: dict) -> str:
        data = event.get("data") or {}
        if self.args.policy and data.get("policy_id") != self.args.policy:
            return "another policy"
        with self.lock:
            if event["id"] in self.seen:
                return "already applied"
            self.seen[event["id"]] = True
            while len(self.seen) > 1024:
                self.seen.popitem(last=False)
            at = parse_time(event["created_at"])
            if self.last_event and at < self.last_event:
                return "older than the last event applied"
            self.last_event = at
            desired = int(data["desired_agents"])
            self.log(f"op=event type={event['type']} desired={desired} "
                     f"depth={data.get('queue_depth')} agents={data.get('agents')} "
                     f"reason={data.get('reason')}")
            self.desired = max(0, min(desired, self.args.max_agents))
            self.reconcile()
            return "applied"

    def tick(self):
        with self.lock:
            self.reconcile()

    def stop_all(self):
        with self.lock:
            self.desired = 0
            self.reconcile()


def handler(agents: Agents, secret_file: str):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            n = int(self.headers.get("Content-Length") or -1)
            if n < 0 or n > BODY_MAX:
                self.send_error(413 if n > BODY_MAX else 411)
                return
            body = self.rfile.read(n)
            # Verify the raw bytes before parsing anything. The secret is read each time,
            # so that a new subscription's secret takes effect without a restart.
            with open(secret_file) as f:
                secret = f.read().strip()
            if not verify(secret, self.headers.get("Orch-Signature", ""), body):
                self.send_error(401, "bad or stale signature")
                return
            try:
                event = json.loads(body)
                outcome = ("ignored: not a scale event"
                           if event.get("type") not in ("scale.up", "scale.down")
                           else agents.apply(event))
            except (ValueError, KeyError, TypeError) as e:
                self.send_error(400, str(e))
                return
            out = json.dumps({"outcome": outcome, "running": len(agents.procs)}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, fmt, *a):
            agents.log("op=http " + fmt % a)

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", default="127.0.0.1:9443", help="HOST:PORT (port 0: any free)")
    ap.add_argument("--cert", required=True, help="TLS certificate chain (PEM) of the listener")
    ap.add_argument("--key", required=True, help="its private key (PEM)")
    ap.add_argument("--secret-file", required=True,
                    help="file of the webhook subscription's signing secret (orch_whsec_...), "
                    "read at each request")
    ap.add_argument("--policy", help="act only on this scaling policy's events (its id)")
    ap.add_argument("--server", required=True, help="orchd's URL, for `orch-agent register`")
    ap.add_argument("--ca-file", help="CA bundle that signed orchd's certificate")
    ap.add_argument("--enroll-token-file", required=True, help="an enrolment token (orch_et_...)")
    ap.add_argument("--state-root", required=True,
                    help="where the agents' state directories go; it and its parents must let "
                    "the job user pass (mode 0711 or 0755)")
    ap.add_argument("--name-prefix", default="auto", help="agents are named PREFIX-0, PREFIX-1...")
    ap.add_argument("--agent", default="orch-agent", help="the orch-agent binary")
    ap.add_argument("--slots", type=int, default=1, help="slots of each agent")
    ap.add_argument("--label", action="append", default=[], help="k=v label of each agent")
    ap.add_argument("--max-agents", type=int, default=32,
                    help="never run more than this many, whatever an event asks")
    args = ap.parse_args()

    agents = Agents(args)
    host, _, port = args.listen.rpartition(":")
    srv = http.server.ThreadingHTTPServer((host, int(port)), handler(agents, args.secret_file))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    # The line scripts and tests wait for: where it listens.
    agents.log(f"op=listen address={host} port={srv.server_address[1]}")

    def ticker():
        while True:
            time.sleep(5)
            agents.tick()

    threading.Thread(target=ticker, daemon=True).start()

    def shutdown(signum, frame):
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    srv.serve_forever()
    agents.stop_all()
    agents.log("op=exit")


if __name__ == "__main__":
    main()
