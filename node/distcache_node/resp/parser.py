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

An inline command right after multibulk frames in one read makes hiredis fail: the bytes
are then walked to find where the frames end, and reading goes on inline from there.
"""

from __future__ import annotations

import re

import hiredis

from distcache_node.resp.errors import FrameError

MAX_INLINE = 64 * 1024  # Redis's PROTO_INLINE_MAX_SIZE
_MAX_HEADER = 32  # "*"/"$", up to 20 digits and CRLF: a longer header line is garbage
# An array header of 5 digits or more, anywhere: hiredis allocates a list of that length as
# soon as it reads the header (a 2**31 one takes seconds), so such bytes are checked first.
_BIG_ARRAY = re.compile(rb"\*[+ ]?\d{5}")
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
        elif single is not None:
            args.append(single)
        elif plain[:1] in (b'"', b"'"):  # a quote that never closes: Redis refuses the line
            raise FrameError("ERR Protocol error: unbalanced quotes in request")
        else:
            args.append(plain)
    return args


def _int(raw: bytes | bytearray, what: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise FrameError(f"ERR Protocol error: invalid {what}") from None


def scan_frames(buf: bytearray, max_args: int, max_bulk: int) -> int:
    """Where the last complete multibulk frame in `buf` ends (0: none complete), checking
    every header seen against the bounds; FrameError when one is broken or over them, its
    `at` where the frames before the broken one end."""
    done = [0]
    try:
        return _scan(buf, max_args, max_bulk, done)
    except FrameError as exc:
        exc.at = done[0]
        raise


def _scan(buf: bytearray, max_args: int, max_bulk: int, done: list[int]) -> int:
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
        boundary = pos = done[0] = p
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
        self._last = b""  # the end of the last read: a header may be split across reads

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
                data = self._feed_multibulk(data, commands, continued=True)
        while data:
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
            if start >= n:
                return
            data = self._feed_multibulk(data[start:] if start else data, commands,
                                        continued=False)

    def _feed_multibulk(self, data: bytes, commands: list[list[bytes]],
                        continued: bool) -> bytes:
        """Multibulk frames from `data` (continuing a held frame when `continued`); returns
        what follows them when that is an inline command, else b""."""
        reader = self._reader
        max_args, max_bulk = self.max_args, self.max_bulk
        broken: FrameError | None = None
        if _BIG_ARRAY.search(data) or (self._last and _BIG_ARRAY.search(self._last + data[:8])):
            # Perhaps a value that looks like a header, perhaps a hostile count: the walk
            # tells which, before hiredis sees it. The frames before a broken one still run.
            held = len(self._tail) if continued else 0
            try:
                scan_frames(self._tail + data if continued else bytearray(data),
                            max_args, max_bulk)
            except FrameError as exc:
                broken, data = exc, data[:max(0, exc.at - held)]
        self._last = data[-8:]
        reader.feed(data)
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
            return self._after_protocol_error(exc, data, continued)
        if broken is not None:
            raise broken
        # hiredis does not say whether it holds part of a frame (it consumes the headers of
        # one it has not finished). The commands it gave back, in canonical RESP (what
        # clients send), are never longer than the bytes they came in: when they add up to
        # all the bytes held, the read ended on a frame boundary. Otherwise (part of a
        # frame, or an unusual encoding) the bytes are walked to find out, and bounded.
        held = len(data) + (len(self._tail) if continued else 0)
        if _canonical_size(commands, first) == held:
            self._tail.clear()
            return b""
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
        return b""

    def _after_protocol_error(self, exc: Exception, data: bytes, continued: bool) -> bytes:
        """hiredis refused what follows the frames it read. An inline command there (after
        multibulk frames in one read) is fine: hand it back, with a fresh hiredis reader.
        Anything else is the client's broken frame."""
        buf = self._tail + data if continued else bytearray(data)
        try:
            scan_frames(buf, self.max_args, self.max_bulk)
        except FrameError as scanned:
            if scanned.at < len(buf) and buf[scanned.at] != 42:  # not a "*": inline
                self._reader = hiredis.Reader()
                self._tail.clear()
                return bytes(buf[scanned.at:])
            raise
        raise FrameError(f"ERR Protocol error: {exc}") from None


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
