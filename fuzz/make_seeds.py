#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/seed-* (run from any
directory; rerun after changing it). Byte layouts: slurm-protocol.md §3.4,
§3.5 (stepd, native little-endian), §4.3, §4.5, §4.7 (RPC, big-endian)."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


# --- rpc_decode (network order) ------------------------------------------
def u16(v): return struct.pack(">H", v)
def u32(v): return struct.pack(">I", v)
def u64(v): return struct.pack(">Q", v)
def packstr(s):
    if s is None:
        return u32(0)
    b = s.encode() + b"\0"
    return u32(len(b)) + b
def packmem(b): return u32(len(b)) + b

CRED = "MUNGE:AwQFAAC" + "x" * 40 + ":"


def frame(version, msg_type, body, flags=0, cred=CRED, forward=b"\0\0", orig=b"\0\0"):
    header = u16(version) + u16(flags) + u16(msg_type) + u32(len(body)) + forward + u16(0) + orig
    auth = b"" if flags & 0x40 else u32(101) + packstr(cred)
    msg = header + auth + body
    return u32(len(msg)) + msg


# The live 22.05 reply body: NO_VAL, rc 0, "vm".
BODY_2205 = bytes.fromhex("fffffffe 00000000 00000003 766d00")
BODY_2511 = u64(0x1234) + u32(42) + u32(0xFFFFFFFC) + u32(0xFFFFFFFE) + u32(0) + packstr("node-7")
ADDR = packmem(bytes([127, 0, 0, 1]) + bytes(12))
REQUEST = ADDR + ADDR + u32(40000) + u32(22) + u32(2)

write("rpc_decode", "callerid-reply-2205", frame(0x2600, 5036, BODY_2205))
write("rpc_decode", "callerid-reply-2205-unframed", frame(0x2600, 5036, BODY_2205)[4:])
write("rpc_decode", "callerid-reply-2511", frame(0x2C00, 5036, BODY_2511))
write("rpc_decode", "callerid-body-2205", BODY_2205)
write("rpc_decode", "callerid-body-2511", BODY_2511)
write("rpc_decode", "callerid-request-2205", frame(0x2600, 5035, REQUEST))
write("rpc_decode", "callerid-request-body", REQUEST)
# 25.05+ answer to a header it could not read: NO_VAL16, no auth, rc 1007.
write("rpc_decode", "rc-header-rejected", frame(0xFFFE, 8001, u32(1007), flags=0x40))
write("rpc_decode", "rc-version-error", frame(0x2900, 8001, u32(1005)))
# 24.11 with forwarding, PACK_ADDRS, and an AF_INET orig_addr.
fwd = u16(2) + packstr("n[1-2]") + u32(10000) + u16(50) + packstr("netcred") + u16(1)
orig4 = u16(2) + bytes([1, 0, 0, 127]) + bytes([0x1a, 0xa2])
write("rpc_decode", "forward-2411-v4", frame(0x2A00, 5036, BODY_2205, flags=0x80, forward=fwd, orig=orig4))
orig6 = u16(10) + packmem(bytes(15) + b"\x01") + bytes([0x16, 0x00])
write("rpc_decode", "orig-v6-2605", frame(0x2D00, 5036, BODY_2511, orig=orig6))
# Unpacker program: 6 ops (u32, mem, str, take 3, u8, finish) over a buffer.
write("rpc_decode", "unpacker-program",
      bytes([6, 0x02, 0x05, 0x06, 0x38, 0x00, 0x0A]) + u32(7) + packmem(b"abc") + packstr("vm") + b"xyz" + b"\x01")

# --- stepd_reply (native little-endian ints) -----------------------------
def i32(v): return struct.pack("<i", v)

# 22.05.8 live: version 0x2600, RUNNING, uid 1001, no X11, no namespace, pid added.
write("stepd_reply", "2205-live", i32(0x2600) + i32(2) + i32(1001) + i32(0) + i32(0) + i32(0) + i32(0))
write("stepd_reply", "handshake-uid", i32(0x2600) + i32(2) + i32(1001))
# 23.11: CANCELLED (3), X11 display 10 with an xauthority path, GET_NS_FD says
# one fd follows but a plain byte arrives instead.
xauth = b"/home/u/.Xauthority\0"
write("stepd_reply", "2311-x11-nsfd",
      i32(0x2800) + i32(3) + i32(1001) + i32(10) + i32(len(xauth)) + xauth + i32(7) + b"\0")
# 25.11: GET_NS_FDS with a count of 2 (types MNT, USER), no descriptors attached.
write("stepd_reply", "2511-nsfds",
      i32(0x2C00) + i32(4) + i32(0) + i32(0) + i32(0) + i32(2) + i32(0x00020000) + b"\0" + i32(0x10000000) + b"\0")
# 26.05: zero namespaces, add_extern_pid refused with -1.
write("stepd_reply", "2605-refused", i32(0x2D00) + i32(2) + i32(0) + i32(0) + i32(0) + i32(0) + i32(-1))
write("stepd_reply", "handshake-rejected", i32(-1))

# --- proc_net -------------------------------------------------------------
TCP = (
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    "   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 20313 1 0000000000000000 100 0 0 10 0\n"
    "   1: 0302010A:0016 4D02010A:C822 01 00000000:00000000 02:0009C6F1 00000000     0        0 41523 4 0000000000000000 20 4 31 10 -1\n"
)
TCP6 = (
    "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    "   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 20315 1 0000000000000000 100 0 0 10 0\n"
    "   1: 0000000000000000FFFF00000302010A:0016 0000000000000000FFFF00004D02010A:9C40 01 00000000:00000000 02:00051C2A 00000000  1001        0 52001 2 0000000000000000 20 4 29 10 -1\n"
)
write("proc_net", "tcp", TCP)
write("proc_net", "tcp6", TCP6)


# The socket path's framing: a header byte per chunk of 1..16 bytes (low 4
# bits: length - 1; bits 4-6: descriptors on the chunk; bit 7: kind order,
# 0 = nsfs first, 1 = pipe first).
def chunks(*parts):
    out = b""
    for data, fds, pipe_first in parts:
        assert 1 <= len(data) <= 16 and 0 <= fds <= 7
        out += bytes([(len(data) - 1) | (fds << 4) | (0x80 if pipe_first else 0)]) + data
    return out

# 22.05: RUNNING, uid 1001, no X11, GET_NS_FD names fd 5 and its carrier
# byte brings one nsfs descriptor, ADD_EXTERN_PID rc 0.
write("stepd_reply", "socket-2205-nsfd", chunks(
    (i32(0x2600) + i32(2) + i32(1001), 0, False),
    (i32(0) + i32(0) + i32(5), 0, False),
    (b"\0", 1, False),
    (i32(0), 0, False)))
# 25.11: GET_NS_FDS count 1 (MNT); the carrier brings three descriptors.
write("stepd_reply", "socket-2511-extra-fds", chunks(
    (i32(0x2C00) + i32(2) + i32(1001), 0, False),
    (i32(0) + i32(0) + i32(1) + i32(0x00020000), 0, False),
    (b"\0", 3, True),
    (i32(0), 0, False)))
# Descriptors riding on plain data bytes, and six on one carrier: more than
# the client's control buffer holds (MSG_CTRUNC).
write("stepd_reply", "socket-2205-ctrunc", chunks(
    (i32(0x2600) + i32(2), 2, False),
    (i32(1001) + i32(0) + i32(0) + i32(5), 0, False),
    (b"\0", 6, True)))
