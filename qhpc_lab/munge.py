"""MUNGE credentials through the real libmunge (ctypes): encode on clients, decode on the server.

A bottom-level utility: both the scheduler (decode) and the kernel-side client (encode) use it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from dataclasses import dataclass

_OPT_SOCKET = 8  # munge_opt_t MUNGE_OPT_SOCKET
CRED_REPLAYED = 17  # munge_err_t EMUNGE_CRED_REPLAYED
CRED_EXPIRED = 15


class MungeError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Credential:
    uid: int
    gid: int
    payload: bytes


@functools.cache
def _lib() -> ctypes.CDLL:
    name = ctypes.util.find_library("munge") or "libmunge.so.2"
    try:
        lib = ctypes.CDLL(name)
    except OSError as err:
        raise MungeError(-1, f"libmunge is not installed ({err}); install Debian's munge") from None
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
    lib.munge_ctx_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p]
    lib.munge_ctx_strerror.argtypes = [ctypes.c_void_p]
    lib.munge_ctx_strerror.restype = ctypes.c_char_p
    return lib


def _socket() -> str | None:
    return os.environ.get("MUNGE_SOCKET") or os.environ.get("QHPC_MUNGE_SOCKET")


class _Context:
    def __init__(self, socket: str | None) -> None:
        self.lib = _lib()
        self.ptr = None
        if socket:
            self.ptr = self.lib.munge_ctx_create()
            self.lib.munge_ctx_set(self.ptr, _OPT_SOCKET, socket.encode())

    def error(self, code: int) -> MungeError:
        text = self.lib.munge_ctx_strerror(self.ptr) if self.ptr else None
        text = text or self.lib.munge_strerror(code)
        return MungeError(code, text.decode(errors="replace"))

    def __enter__(self) -> _Context:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.ptr:
            self.lib.munge_ctx_destroy(self.ptr)


def encode(payload: bytes = b"", socket: str | None = None) -> str:
    """A fresh credential for the calling process's uid (``$MUNGE_SOCKET`` picks the daemon)."""
    with _Context(socket or _socket()) as ctx:
        cred = ctypes.c_char_p()
        code = ctx.lib.munge_encode(ctypes.byref(cred), ctx.ptr, payload or None, len(payload))
        if code:
            raise ctx.error(code)
        value = cred.value.decode()
        ctypes.CDLL(None).free(cred)
        return value


def decode(credential: str, socket: str | None = None) -> Credential:
    """Check a credential with munged; replayed, expired and forged ones raise MungeError."""
    with _Context(socket or _socket()) as ctx:
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
            ctypes.CDLL(None).free(buf)
        if code:
            raise ctx.error(code)
        return Credential(uid.value, gid.value, payload)
