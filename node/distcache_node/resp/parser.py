"""Commands out of a RESP byte stream: hiredis's C reader for the multibulk frames every
client sends, a small reader of our own for inline commands (telnet, `redis-cli` piping
plain lines), and bounds on what a client may make the node hold.

hiredis parses replies, not requests: it has no bound on a bulk length (a `$9999999999`
header makes it wait for, and buffer, that many bytes) and accepts types a request may not
hold. So every complete command is checked (an array of bulk strings within the bounds),
and when a read ends inside a frame, the buffered part is walked by `scan_frames`, which
checks the headers it has seen so far against the bounds and finds where the incomplete
frame starts; reads that end on a frame boundary, the common case, skip that walk (see
_feed_multibulk for how that is known).

Limitation: after multibulk frames, an inline command in the same read is a protocol
error (hiredis cannot hand back the bytes it refused); no client mixes the two.
"""

from __future__ import annotations

import re

import hiredis

from distcache_node.resp.errors import FrameError

MAX_INLINE = 64 * 1024  # Redis's PROTO_INLINE_MAX_SIZE
_MAX_HEADER = 32  # "*"/"$", up to 20 digits and CRLF: a longer header line is garbage
_INLINE_ARG = re.compile(rb'"((?:\\.|[^"\\])*)"|\'([^\']*)\'|(\S+)')
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"a": b"\a"}
_ESCAPE = re.compile(rb"\\(x[0-9a-fA-F]{2}|.)", re.DOTALL)


def _unescape(match: re.Match[bytes]) -> bytes:
    code = match.group(1)
    if code[:1] == b"x" and len(code) == 3:
        return bytes([int(code[1:], 16)])
    return _ESCAPES.get(code, code)


def split_inline(line: bytes) -> list[bytes]:
    """An inline command's arguments: split on whitespace, "double" (with \\n, \\xHH...
    escapes) and 'single' quotes as redis-cli writes them."""
    args = []
    for match in _INLINE_ARG.finditer(line):
        quoted, single, plain = match.groups()
        if quoted is not None:
            args.append(_ESCAPE.sub(_unescape, quoted))
        else:
            args.append(single if single is not None else plain)
    return args


def _int(raw: bytes | bytearray, what: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise FrameError(f"ERR Protocol error: invalid {what}") from None


def scan_frames(buf: bytearray, max_args: int, max_bulk: int) -> int:
    """Where the last complete multibulk frame in `buf` ends (0: none complete), checking
    every header seen against the bounds; FrameError when one is broken or over them."""
    n = len(buf)
    pos = boundary = 0
    while pos < n:
        if buf[pos] != 42:  # b"*"
            raise FrameError(f"ERR Protocol error: expected '*', got '{chr(buf[pos])}'")
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            if n - pos > _MAX_HEADER:
                raise FrameError("ERR Protocol error: invalid multibulk length")
            return boundary
        count = _int(buf[pos + 1:eol], "multibulk length")
        if count > max_args:
            raise FrameError("ERR Protocol error: invalid multibulk length")
        p = eol + 2
        for _ in range(max(count, 0)):
            if p >= n:
                return boundary
            if buf[p] != 36:  # b"$"
                raise FrameError(f"ERR Protocol error: expected '$', got '{chr(buf[p])}'")
            eol = buf.find(b"\r\n", p)
            if eol < 0:
                if n - p > _MAX_HEADER:
                    raise FrameError("ERR Protocol error: invalid bulk length")
                return boundary
            size = _int(buf[p + 1:eol], "bulk length")
            if not 0 <= size <= max_bulk:
                raise FrameError("ERR Protocol error: invalid bulk length")
            p = eol + 2 + size + 2
            if p > n:
                return boundary
        boundary = pos = p
    return boundary


class RequestReader:
    """Feed it bytes, get whole commands (lists of bulk strings) back, in order."""

    def __init__(self, max_args: int, max_bulk: int, max_frame: int) -> None:
        self.max_args = max_args
        self.max_bulk = max_bulk
        self.max_frame = max_frame
        self._reader = hiredis.Reader()
        # The bytes of a multibulk frame that is not complete yet (hiredis holds them too),
        # or of an inline line without its newline yet.
        self._tail = bytearray()
        self._inline = False

    @property
    def mid_frame(self) -> bool:
        """Whether part of a command has arrived and the rest not yet."""
        return bool(self._tail)

    def feed(self, data: bytes) -> list[list[bytes]]:
        """The commands completed by `data`. FrameError when the stream breaks; its
        `commands` holds those that came whole before the break (they are still run)."""
        commands: list[list[bytes]] = []
        try:
            self._feed(data, commands)
        except FrameError as exc:
            exc.commands = commands
            raise
        return commands

    def _feed(self, data: bytes, commands: list[list[bytes]]) -> None:
        if self._tail:
            if self._inline:
                data = bytes(self._tail) + data
                self._tail.clear()
                self._inline = False
            else:
                self._feed_multibulk(data, commands, continued=True)
                return
        start = 0
        n = len(data)
        while start < n and data[start] != 42:  # inline commands until a "*"
            eol = data.find(b"\n", start)
            if eol < 0:
                if n - start > MAX_INLINE:
                    raise FrameError("ERR Protocol error: too big inline request")
                self._tail += data[start:]
                self._inline = True
                return
            if eol - start > MAX_INLINE:
                raise FrameError("ERR Protocol error: too big inline request")
            args = split_inline(data[start:eol])
            if len(args) > self.max_args:
                raise FrameError("ERR Protocol error: invalid multibulk length")
            if args:
                commands.append(args)
            start = eol + 1
        if start < n:
            self._feed_multibulk(data[start:] if start else data, commands, continued=False)

    def _feed_multibulk(self, data: bytes, commands: list[list[bytes]], continued: bool) -> None:
        reader = self._reader
        reader.feed(data)
        max_args, max_bulk = self.max_args, self.max_bulk
        first = len(commands)
        try:
            while (item := reader.gets()) is not False:
                if type(item) is not list:
                    if item is None:  # "*-1": a null array, ignored as Redis does
                        continue
                    raise FrameError("ERR Protocol error: expected an array of bulk strings")
                if len(item) > max_args:
                    raise FrameError("ERR Protocol error: invalid multibulk length")
                for arg in item:
                    if type(arg) is not bytes or len(arg) > max_bulk:
                        raise FrameError("ERR Protocol error: expected an array of bulk "
                                         "strings within the bulk length limit")
                if item:  # "*0": nothing to do
                    commands.append(item)
        except hiredis.ProtocolError as exc:
            raise FrameError(f"ERR Protocol error: {exc}") from None
        # hiredis does not say whether it holds part of a frame (it consumes the headers of
        # one it has not finished). The commands it gave back, in canonical RESP (what
        # clients send), are never longer than the bytes they came in: when they add up to
        # all the bytes held, the read ended on a frame boundary. Otherwise (part of a
        # frame, or an unusual encoding) the bytes are walked to find out, and bounded.
        held = len(data) + (len(self._tail) if continued else 0)
        if _canonical_size(commands, first) == held:
            self._tail.clear()
            return
        tail = self._tail
        if continued:
            tail += data
        else:
            tail[:] = data
        cut = scan_frames(tail, max_args, max_bulk)
        if cut:
            del tail[:cut]
        if len(tail) > self.max_frame:
            raise FrameError("ERR Protocol error: request over the size limit")


def _canonical_size(commands: list[list[bytes]], first: int) -> int:
    """Bytes that commands[first:] take in canonical RESP ("*2\r\n$3\r\nGET\r\n...")."""
    size = 0
    for i in range(first, len(commands)):
        command = commands[i]
        count = len(command)
        size += (1 if count < 10 else len(str(count))) + 3
        for arg in command:
            n = len(arg)
            size += n + (1 if n < 10 else 2 if n < 100 else len(str(n))) + 5
    return size
