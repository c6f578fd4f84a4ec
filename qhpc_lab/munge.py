"""MUNGE credentials through the real libmunge (ctypes): encode on clients, decode on the server.

A bottom-level utility: both the scheduler (decode) and the kernel-side client (encode) use it.
ctypes releases the GIL for the whole libmunge call (socket round trip to munged included), so
decodes from several threads overlap; each thread keeps its own ``munge_ctx`` per socket
(libmunge forbids sharing one between threads) and use (a decode leaves a context unfit to
encode with).
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import ctypes.util
import functools
import hashlib
import os
import re
import threading
from dataclasses import dataclass

# munge_opt_t (munge.h)
_OPT_TTL = 4
_OPT_ENCODE_TIME = 6
_OPT_SOCKET = 8
# munge_err_t (munge.h)
NOT_INSTALLED = -1
"""Our code for "libmunge could not be loaded" (libmunge's own codes are 1..255)."""
SOCKET_ERROR = 6
"""EMUNGE_SOCKET: munged is not there (socket missing, refusing, or hung up)."""
TIMEOUT = 7
CRED_EXPIRED = 15
CRED_REPLAYED = 17
REQUEST_BINDING = b"qhpc-request/1\n"
"""How a payload that binds a credential to one HTTP request begins (:func:`request_binding`)."""


class MungeError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Credential:
    uid: int
    gid: int
    payload: bytes
    encoded_at: float
    """Encode time, on the encoding host's clock, as munged reports it."""
    ttl_s: int
    """Time-to-live munged granted: it accepts the credential until ``encoded_at + ttl_s``."""

    @property
    def expires_at(self) -> float:
        """First second munged refuses it as expired (it compares whole seconds, inclusive)."""
        return self.encoded_at + self.ttl_s + 1


@functools.cache
def _lib() -> ctypes.CDLL:
    name = ctypes.util.find_library("munge") or "libmunge.so.2"
    try:
        lib = ctypes.CDLL(name)
    except OSError as err:
        raise MungeError(
            NOT_INSTALLED, f"libmunge is not installed ({err}); install Debian's munge"
        ) from None
    lib.munge_encode.argtypes = [
        ctypes.POINTER(ctypes.c_char_p),
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int,
    ]
    lib.munge_decode.argtypes = [
        ctypes.c_char_p,
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.POINTER(ctypes.c_int),
        ctypes.POINTER(ctypes.c_uint),
        ctypes.POINTER(ctypes.c_uint),
    ]
    lib.munge_strerror.restype = ctypes.c_char_p
    lib.munge_ctx_create.restype = ctypes.c_void_p
    lib.munge_ctx_destroy.argtypes = [ctypes.c_void_p]
    # munge_ctx_get/set are variadic; every option we pass is a pointer (a string for set).
    lib.munge_ctx_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p]
    lib.munge_ctx_get.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    lib.munge_ctx_strerror.argtypes = [ctypes.c_void_p]
    lib.munge_ctx_strerror.restype = ctypes.c_char_p
    return lib


@functools.cache
def _free() -> ctypes._CFuncPtr:
    """libc's free, for the buffers libmunge allocates."""
    free = ctypes.CDLL(None).free
    free.argtypes = [ctypes.c_void_p]
    return free


def _socket() -> str | None:
    return os.environ.get("MUNGE_SOCKET") or os.environ.get("QHPC_MUNGE_SOCKET")


class _Context:
    """One ``munge_ctx_t`` bound to a socket (None: libmunge's default)."""

    def __init__(self, socket: str | None) -> None:
        self.lib = _lib()
        self.ptr = self.lib.munge_ctx_create()
        if not self.ptr:
            raise MungeError(5, "munge_ctx_create failed (out of memory)")
        if socket:
            self.lib.munge_ctx_set(self.ptr, _OPT_SOCKET, socket.encode())

    def error(self, code: int) -> MungeError:
        text = self.lib.munge_ctx_strerror(self.ptr) or self.lib.munge_strerror(code)
        return MungeError(code, text.decode(errors="replace"))

    def get(self, option: int, value: ctypes._SimpleCData) -> int | float:
        self.lib.munge_ctx_get(self.ptr, option, ctypes.byref(value))
        return value.value

    def __del__(self) -> None:
        if getattr(self, "ptr", None):
            self.lib.munge_ctx_destroy(self.ptr)


_contexts = threading.local()


def _context(use: str, socket: str | None) -> _Context:
    """This thread's context for ``use`` ("encode" or "decode") on ``socket``, made once."""
    made: dict[tuple[str, str | None], _Context] = _contexts.__dict__.setdefault("made", {})
    if (use, socket) not in made:
        made[use, socket] = _Context(socket)
    return made[use, socket]


def encode(payload: bytes = b"", socket: str | None = None) -> str:
    """A fresh credential for the calling process's uid (``$MUNGE_SOCKET`` picks the daemon)."""
    ctx = _context("encode", socket or _socket())
    cred = ctypes.c_char_p()
    code = ctx.lib.munge_encode(ctypes.byref(cred), ctx.ptr, payload or None, len(payload))
    if code:
        raise ctx.error(code)
    value = cred.value.decode()
    _free()(cred)
    return value


def request_binding(method: str, target: str | bytes, body: bytes) -> bytes:
    """The payload that binds a credential to one request: its method, its target (path and
    query, as sent) and a digest of its body.

    A bound credential proves who asked for *this* request, not for any: whoever captures
    one (a listener a hook was tricked into calling) can only repeat the same request once,
    and the scheduler refuses the repeat as a replay.
    """
    raw = target.encode() if isinstance(target, str) else target
    digest = hashlib.sha256(body).hexdigest().encode()
    return b"".join((REQUEST_BINDING, method.upper().encode(), b"\n", raw, b"\n", digest))


def encode_for_request(
    method: str, target: str | bytes, body: bytes, socket: str | None = None
) -> str:
    """A fresh credential bound to one request (:func:`request_binding`)."""
    return encode(request_binding(method, target, body), socket)


def decode(credential: str, socket: str | None = None) -> Credential:
    """Check a credential with munged; replayed, expired and forged ones raise MungeError.

    munged's replay cache lives in its memory only: a caller that must refuse replays across
    munged restarts also remembers :func:`fingerprint` until :attr:`Credential.expires_at`.
    """
    ctx = _context("decode", socket or _socket())
    buf, length = ctypes.c_void_p(), ctypes.c_int()
    uid, gid = ctypes.c_uint(), ctypes.c_uint()
    code = ctx.lib.munge_decode(
        credential.encode(),
        ctx.ptr,
        ctypes.byref(buf),
        ctypes.byref(length),
        ctypes.byref(uid),
        ctypes.byref(gid),
    )
    payload = ctypes.string_at(buf, length.value) if buf.value else b""
    if buf.value:
        _free()(buf)
    if code:
        raise ctx.error(code)
    return Credential(
        uid.value,
        gid.value,
        payload,
        encoded_at=float(ctx.get(_OPT_ENCODE_TIME, ctypes.c_int64())),
        ttl_s=int(ctx.get(_OPT_TTL, ctypes.c_int())),
    )


_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/]")


def fingerprint(credential: str) -> str:
    """SHA-256 of the bytes a credential's base64 text stands for.

    munged accepts several spellings of one credential (whitespace anywhere in it, other
    values of the unused low bits of the last base64 digit): a replay memory keyed on the
    header's text would let such a variant through, so this hashes the decoded bytes.
    """
    text = credential.strip()
    body = _NOT_BASE64.sub("", text[text.find(":") + 1 : text.rfind(":")])
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4))
    except binascii.Error:  # not base64 at all: munged does not accept it either
        raw = text.encode(errors="surrogateescape")
    return hashlib.sha256(raw).hexdigest()
