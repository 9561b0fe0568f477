"""Drive pykdclient 0.1.1 (a host-side KDCOM implementation) against kds-kdemu over a unix socket.

Run by tests/kdemu/tests/peers.rs with the venv's python:

    python pykd_driver.py SOCKET PHYS_ADDR VIRT_ADDR_32 VIRT_ADDR_64

pykdclient's CLI has no unix-socket transport and no commands, so this calls its DebugContext
directly: the RESET handshake, the wait for the state change, GetVersion, a ReadPhysicalMemory at
PHYS_ADDR, a ReadVirtualMemory at VIRT_ADDR_32 (below 4 GiB: its request layout carries a u32
address), a ReadVirtualMemory at VIRT_ADDR_64 (a 64-bit kernel address, which pykdclient cannot
encode) and Continue2. Every step has a watchdog, so a hang is reported instead of blocking.

Each step prints one line `STEP {json}` on stdout; pykdclient's own packet log goes to stderr.
"""

import json
import logging
import signal
import socket
import struct
import sys

from pykdclient import debug_connection, debug_context

logging.basicConfig(level=logging.DEBUG, format="pykdclient %(levelname)s %(message)s", stream=sys.stderr)

path = sys.argv[1]
phys = int(sys.argv[2], 0)
virt32 = int(sys.argv[3], 0)
virt64 = int(sys.argv[4], 0)


class Watchdog(Exception):
    pass


def step(name, fn, secs=10):
    """Run one step under a SIGALRM watchdog and print what happened."""

    def on_alarm(*_):
        raise Watchdog(f"no answer within {secs} s")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(secs)
    record = {"step": name}
    try:
        value = fn()
        record["ok"] = True
        record["value"] = value
    except BaseException as e:  # noqa: BLE001 (pykdclient calls sys.exit() on a version it rejects)
        record["ok"] = False
        record["error"] = f"{type(e).__name__}: {e}"
    finally:
        signal.alarm(0)
    record["next_pid"] = ctx.next_pid
    record["remote_pid"] = ctx.remote_pid
    print("STEP " + json.dumps(record), flush=True)
    return record


def fix_ids():
    """WORKAROUND for pykdclient bug 1 (its _handlePacket never consumes the ACK of its own
    request, so next_pid is not flipped and its next request reuses the same packet id, which a
    correct kernel ACKs as a duplicate and drops): flip next_pid by hand after each answered
    request, as a correct host would on the ACK."""
    ctx.next_pid = (ctx.next_pid ^ 1) & ~0x800


sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(30)
sock.connect(path)
conn = debug_connection.DebugConnection(path)
conn.handle_socket(sock)  # any object with recv/send: pykdclient has no unix-socket option
ctx = debug_context.DebugContext()
ctx.set_connection(conn)

# pykdclient sends RESET (id 0x80800800) and blocks until a RESET comes back; it never sends 'b'.
step("reset", lambda: (ctx._send_reset(), "reset echoed")[1])


def wait_stop():
    while ctx.running:
        ctx._handlePacket()
    return "halted"


step("state_change", wait_stop)

# Returns (os "major.minor", "protocol" (really MachineType), KernBase low 32 bits,
# PsLoadedModuleList low 32 bits, DebuggerDataList low 32 bits). pykdclient bug 3: it calls
# sys.exit() unless the u16 at union+12 (MaxManipulate|Simulation) is 0 or 0x2D, so the emulator
# runs with --max-manipulate 0.
version = step("GetVersion", ctx._getVersionInfo)
if version["ok"]:
    fix_ids()


def read(fn, address, length):
    data = fn(address, length)
    return bytes(data).hex()


# pykdclient bug 4 (32-bit layouts): the address is packed as a u32 at union+0. With the upper
# half left 0 this is the 64-bit layout for any address below 4 GiB, so physical reads work.
# _readPhysicalMemory/_readVirtualMemory re-send forever on a failed (empty) reply: the watchdog
# ends that.
r = step("ReadPhysicalMemory", lambda: read(ctx._readPhysicalMemory, phys, 0x10))
if r["ok"]:
    fix_ids()
r = step("ReadVirtualMemory32", lambda: read(ctx._readVirtualMemory, virt32, 0x10))
if r["ok"]:
    fix_ids()
# A 64-bit kernel address cannot be packed ('I' format): struct.error before anything is sent.
r = step("ReadVirtualMemory64", lambda: read(ctx._readVirtualMemory, virt64, 0x10))
if r["ok"]:
    fix_ids()

# pykdclient bug 5: Continue2 is packed with 32-bit offsets, so ContinueStatus goes out as 0 and
# its SymbolStart/End (1, 1) land in Dr7. It waits for the ACK (and flips next_pid itself).
step("Continue2", lambda: (ctx._sendDbgKdContinue2(), "acknowledged")[1])
sock.close()
