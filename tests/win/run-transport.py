#!/usr/bin/env python3
"""tests/win/run-transport.py EXE [WINE_RUN] [FILTER]: runs test-transport.exe against
tests/win/tls-server.py.

Makes two development CAs with tools/gen-certs.sh (the pinned one, "good", and "other") and a
certificate signed by the pinned CA for a name that is not localhost, in a private temporary
folder; starts the servers on loopback ports picked at run time; hands the test their URLs
and the pinned CA through the environment (ORCH_TEST_URL, ORCH_TEST_OTHER_URL,
ORCH_TEST_WRONGNAME_URL, ORCH_TEST_ADDR_URL, ORCH_TEST_WRONGADDR_URL, ORCH_TEST_REFUSED_URL,
ORCH_TEST_CA); runs EXE under WINE_RUN
(tools/wine-run by default); stops the servers and removes the folder (kept when the test
fails and ORCH_TEST_KEEP is set). Exits with the test's exit code.
"""
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def wine_path(p):
    """The Windows name of a Unix path (wine maps / to drive Z:)."""
    return "Z:" + os.path.abspath(p).replace("/", "\\")


def wrong_name_cert(d):
    """A leaf for wrong-name.invalid signed by the pinned CA (gen-certs.sh always names
    localhost)."""
    ca = f"{d}/good"
    ext = f"{d}/wrongname.ext"
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:wrong-name.invalid\nextendedKeyUsage=serverAuth\n"
                "basicConstraints=CA:FALSE\n")
    run = lambda *a: subprocess.run(a, check=True, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
    run("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", f"{d}/wrongname.key", "-out", f"{d}/wrongname.csr",
        "-subj", "/CN=wrong-name.invalid")
    run("openssl", "x509", "-req", "-in", f"{d}/wrongname.csr", "-CA", f"{ca}/ca.pem",
        "-CAkey", f"{ca}/ca.key", "-CAcreateserial", "-out", f"{d}/wrongname.crt",
        "-days", "30", "-sha256", "-extfile", ext)
    with open(f"{d}/wrongname.pem", "w") as out:
        for part in (f"{d}/wrongname.crt", f"{ca}/ca.pem"):
            with open(part) as f:
                out.write(f.read())


def gen_certs(d):
    """tools/gen-certs.sh into d (its signatures are ones wine's crypt32 can verify)."""
    subprocess.run([f"{ROOT}/tools/gen-certs.sh", d], check=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    exe = sys.argv[1]
    wine_run = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else f"{ROOT}/tools/wine-run"
    extra = sys.argv[3:]
    tmp = tempfile.mkdtemp(prefix="orch-wtransport-")
    server = None
    try:
        for name in ("good", "other"):
            gen_certs(f"{tmp}/{name}")
        wrong_name_cert(tmp)
        server = subprocess.Popen([sys.executable, f"{HERE}/tls-server.py", "--certs", tmp],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        ready, _, _ = select.select([server.stdout], [], [], 60)
        if not ready:
            sys.exit("run-transport: the test server did not start within 60 s")
        ports = json.loads(server.stdout.readline())
        env = dict(os.environ)
        env.update({
            "ORCH_TEST_URL": f"https://localhost:{ports['good']}",
            "ORCH_TEST_OTHER_URL": f"https://localhost:{ports['other']}",
            "ORCH_TEST_WRONGNAME_URL": f"https://localhost:{ports['wrongname']}",
            "ORCH_TEST_ADDR_URL": f"https://127.0.0.1:{ports['addr']}",
            "ORCH_TEST_WRONGADDR_URL": f"https://127.0.0.1:{ports['wrongname']}",
            "ORCH_TEST_REFUSED_URL": f"https://localhost:{free_port()}",
            "ORCH_TEST_CA": wine_path(f"{tmp}/good/ca.pem"),
        })
        rc = subprocess.run([wine_run, exe] + extra, env=env, timeout=900).returncode
        if rc != 0 and os.environ.get("ORCH_TEST_KEEP"):
            print(f"run-transport: certificates kept in {tmp}", file=sys.stderr)
            tmp = None
        sys.exit(rc)
    finally:
        if server:
            server.stdin.close()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
