"""CertReloader against the layout kubelet gives a Secret volume (its AtomicWriter): the
visible files are symlinks `tls.crt -> ..data/tls.crt`, `..data` is a symlink to a
timestamped folder, and an update writes a new folder and swaps `..data` in one rename. The
files' own paths never change; only the target of `..data` does."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

from cryptography import x509

from distcache_node.local import certs
from distcache_node.tlsreload import CertReloader
from support import publish_secret_volume as _publish


def _files(tmp: Path, tag: str, ca: Path) -> dict[str, bytes]:
    crt, key = certs.make_cert(tmp / tag, "node", ca)
    return {"tls.crt": crt.read_bytes(), "tls.key": key.read_bytes(),
            "ca.crt": (ca / "ca.pem").read_bytes()}


def test_a_swapped_data_symlink_is_taken_in(tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    certs.make_ca(ca)
    volume = tmp_path / "volume"
    volume.mkdir()
    first = _files(tmp_path, "one", ca)
    _publish(volume, "2026_12_02_10_00_00.1", first)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(volume / "tls.crt", volume / "tls.key")
    reloader = CertReloader(str(volume / "tls.crt"), str(volume / "tls.key"),
                            str(volume / "ca.crt"), [ctx])
    assert reloader.check() is False  # nothing changed yet
    second = _files(tmp_path, "two", ca)
    _publish(volume, "2026_12_02_10_01_00.2", second)
    assert reloader.check() is True and reloader.reloads == 1
    assert reloader.check() is False
    # The context now holds the second certificate: a handshake against it shows it.
    client = ssl.create_default_context(cafile=str(ca / "ca.pem"))
    client.check_hostname = False
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def serve() -> None:
        conn, _ = srv.accept()
        try:
            with ctx.wrap_socket(conn, server_side=True):
                pass
        except (ssl.SSLError, OSError):
            pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    with socket.create_connection(("127.0.0.1", port)) as raw, \
            client.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    t.join(5)
    srv.close()
    assert der is not None
    served = x509.load_der_x509_certificate(der)
    assert served == x509.load_pem_x509_certificate(second["tls.crt"])


def test_a_half_published_pair_keeps_the_old_one(tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    certs.make_ca(ca)
    volume = tmp_path / "volume"
    volume.mkdir()
    _publish(volume, "a", _files(tmp_path, "one", ca))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(volume / "tls.crt", volume / "tls.key")
    reloader = CertReloader(str(volume / "tls.crt"), str(volume / "tls.key"),
                            str(volume / "ca.crt"), [ctx])
    other = _files(tmp_path, "two", ca)
    third = _files(tmp_path, "three", ca)
    _publish(volume, "b", {**other, "tls.key": third["tls.key"]})  # mismatched pair
    assert reloader.check() is False and reloader.reloads == 0
    _publish(volume, "c", third)  # the good pair arrives: taken in
    assert reloader.check() is True and reloader.reloads == 1
