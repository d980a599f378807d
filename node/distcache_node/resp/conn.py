"""Connection commands: PING ECHO AUTH HELLO QUIT SELECT CLIENT."""

from __future__ import annotations

import re

from distcache_node.resp import replies
from distcache_node.resp.errors import NOT_INTEGER, SYNTAX, WRONG_PASS, RespError, wrong_arity
from distcache_node.resp.session import Session
from distcache_node.resp.values import canonical_int

SERVER_NAME = "distcache"
# The Redis version whose command semantics this edge follows (clients gate features on it).
REDIS_VERSION = "7.2.0"
_NAME_OK = re.compile(rb"[!-~]*")  # Redis: no spaces, newlines or other special characters


def ping(s: Session, args: list[bytes]) -> bytes:
    if len(args) > 2:
        raise wrong_arity("ping")
    return replies.PONG if len(args) == 1 else replies.bulk(args[1])


def echo(s: Session, args: list[bytes]) -> bytes:
    return replies.bulk(args[1])


def _authenticate(s: Session, user: bytes, password: bytes) -> None:
    keys = s.svc.api_keys
    if not keys.enabled:
        raise RespError("ERR AUTH <password> called without any password configured for the "
                        "default user. Are you sure your configuration is correct?")
    # Surrogate escapes keep bytes that are not UTF-8, as header values arrive over HTTP.
    if user != b"default" or not keys.accepts(password.decode("utf-8", "surrogateescape")):
        raise WRONG_PASS
    s.authed = True


def auth(s: Session, args: list[bytes]) -> bytes:
    if len(args) > 3:
        raise SYNTAX
    user, password = (b"default", args[1]) if len(args) == 2 else (args[1], args[2])
    _authenticate(s, user, password)
    return replies.OK


def quit_(s: Session, args: list[bytes]) -> bytes:
    s.close_after_reply = True
    return replies.OK


def select(s: Session, args: list[bytes]) -> bytes:
    index = canonical_int(args[1])
    if index is None:
        raise NOT_INTEGER
    if index != 0:
        raise RespError("ERR DB index is out of range")
    return replies.OK


def hello(s: Session, args: list[bytes]) -> bytes:
    version = 3 if s.resp3 else 2
    credentials: tuple[bytes, bytes] | None = None
    name: bytes | None = None
    if len(args) > 1:
        number = canonical_int(args[1])
        if number is None:
            raise RespError("ERR Protocol version is not an integer or out of range")
        if number not in (2, 3):
            raise RespError("NOPROTO unsupported protocol version")
        version = number
        i = 2
        while i < len(args):
            option = args[i].upper()
            if option == b"AUTH" and i + 2 < len(args):
                credentials = (args[i + 1], args[i + 2])
                i += 3
            elif option == b"SETNAME" and i + 1 < len(args):
                name = args[i + 1]
                i += 2
            else:
                raise RespError(f"ERR Syntax error in HELLO option "
                                f"'{args[i].decode(errors='replace')}'")
    # Checked before anything changes: a refused HELLO leaves the connection as it was.
    if name is not None:
        _check_name(name)
    if credentials is not None:
        _authenticate(s, *credentials)
    elif s.svc.api_keys.enabled and not s.authed:
        raise RespError("NOAUTH HELLO must be called with the client already authenticated, "
                        "otherwise the HELLO <proto> AUTH <user> <pass> option can be used to "
                        "authenticate the client and select the RESP protocol version at the "
                        "same time")
    if name is not None:
        s.name = name
    s.resp3 = version == 3
    return replies.encode({
        "server": SERVER_NAME, "version": REDIS_VERSION, "proto": version, "id": s.id,
        "mode": "standalone", "role": "master", "modules": [],
    }, s.resp3)


def _check_name(name: bytes) -> None:
    if not _NAME_OK.fullmatch(name):
        raise RespError("ERR Client names cannot contain spaces, newlines or special "
                        "characters.")


def client(s: Session, args: list[bytes]) -> bytes:
    sub = args[1].upper()
    if sub == b"SETNAME" and len(args) == 3:
        _check_name(args[2])
        s.name = args[2]
        return replies.OK
    if sub == b"GETNAME" and len(args) == 2:
        return replies.bulk(s.name) if s.name else replies.null(s.resp3)
    if sub == b"ID" and len(args) == 2:
        return replies.integer(s.id)
    if sub == b"SETINFO" and len(args) == 4:
        attr, value = args[2].upper(), args[3]
        if attr not in (b"LIB-NAME", b"LIB-VER"):
            raise RespError(f"ERR Unrecognized option '{args[2].decode(errors='replace')}'")
        _check_name(value)
        if attr == b"LIB-NAME":
            s.lib_name = value
        else:
            s.lib_ver = value
        return replies.OK
    if sub == b"INFO" and len(args) == 2:
        return replies.bulk(s.info_line())
    if sub == b"LIST" and len(args) == 2:
        return replies.bulk(b"".join(other.info_line() for other in s.svc.sessions.values()))
    if sub in (b"SETNAME", b"GETNAME", b"ID", b"SETINFO", b"INFO", b"LIST"):
        raise RespError(f"ERR wrong number of arguments for 'client|{sub.lower().decode()}' "
                        "command")
    raise RespError(f"ERR unknown subcommand '{args[1].decode(errors='replace')}'. "
                    "Try CLIENT HELP.")
