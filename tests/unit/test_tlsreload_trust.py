"""CertReloader builds trust afresh on every reload: a CA dropped from the CA file is refused
from the next handshake on (OpenSSL cannot remove a CA from a loaded context, so the added
contexts hand new connections to fresh twins). Handshakes run in memory (wrap_bio, as
asyncio and uvloop do per connection): no sockets."""

from __future__ import annotations

import ssl
from pathlib import Path

from distcache_node.cluster.peers import client_ssl_context
from distcache_node.config import NodeConfig
from distcache_node.local import certs
from distcache_node.serve import server_ssl_context
from distcache_node.tlsreload import CertReloader, cert_fingerprint
from support import handshake


def accepted(result: dict[str, object] | str) -> bool:
    """The handshake went through with a verified client certificate."""
    return isinstance(result, dict) and bool(result)


def refused(result: dict[str, object] | str) -> bool:
    return isinstance(result, str) and result.startswith("refused")


def _files(tmp: Path) -> tuple[Path, Path, Path, Path, Path]:
    one, two = tmp / "one", tmp / "two"
    certs.make_ca(one, "CA one")
    certs.make_ca(two, "CA two")
    cert, key = certs.make_cert(tmp / "node", "node", one)
    bundle = tmp / "ca.crt"
    bundle.write_bytes((one / "ca.pem").read_bytes() + (two / "ca.pem").read_bytes())
    return one, two, cert, key, bundle


def _contexts(cert: Path, key: Path, bundle: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    config = NodeConfig(tls_cert=str(cert), tls_key=str(key), tls_ca=str(bundle))
    server = server_ssl_context(config)
    assert server is not None
    return server, client_ssl_context(str(cert), str(key), str(bundle))


def test_a_dropped_ca_is_refused_from_the_next_handshake(tmp_path: Path) -> None:
    one, two, cert, key, bundle = _files(tmp_path)
    server, client = _contexts(cert, key, bundle)
    reloader = CertReloader(str(cert), str(key), str(bundle))
    reloader.add(server)
    reloader.add(client)
    peer_two = client_ssl_context(*map(str, certs.make_cert(tmp_path / "p2", "p2", two)),
                                  str(one / "ca.pem"))
    peer_one = client_ssl_context(*map(str, certs.make_cert(tmp_path / "p1", "p1", one)),
                                  str(one / "ca.pem"))
    assert accepted(handshake(peer_two, server))
    assert len(reloader.report()["ca_sha256"]) == 2  # type: ignore[arg-type]

    bundle.write_bytes((one / "ca.pem").read_bytes())
    assert reloader.check() is True
    assert refused(handshake(peer_two, server)), handshake(peer_two, server)
    assert accepted(handshake(peer_one, server))
    assert reloader.report()["ca_sha256"] == [cert_fingerprint(str(one / "ca.pem"))]

    # Towards peers too: a server certificate from CA two is no longer trusted.
    server_two = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_two.load_cert_chain(*certs.make_cert(tmp_path / "s2", "s2", two))
    assert refused(handshake(client, server_two))
    # ... and a CA added back is trusted again, by the same added contexts.
    bundle.write_bytes((one / "ca.pem").read_bytes() + (two / "ca.pem").read_bytes() + b"\n")
    assert reloader.check() is True
    assert isinstance(handshake(client, server_two), dict)
    assert accepted(handshake(peer_two, server))


def test_the_twins_keep_the_settings_of_the_contexts_added(tmp_path: Path) -> None:
    _, _, cert, key, bundle = _files(tmp_path)
    server, client = _contexts(cert, key, bundle)
    reloader = CertReloader(str(cert), str(key), str(bundle), [server, client])
    bundle.write_bytes(bundle.read_bytes() + b"\n")
    assert reloader.check() is True
    for original, twin in zip([server, client], reloader.current, strict=True):
        assert twin is not original
        for attribute in ("protocol", "options", "verify_mode", "verify_flags",
                          "check_hostname", "minimum_version", "maximum_version"):
            assert getattr(twin, attribute) == getattr(original, attribute), attribute
    assert server.verify_mode == ssl.CERT_OPTIONAL  # data clients need no certificate
    assert accepted(handshake(client, server))


def test_an_unusable_ca_file_keeps_the_trust_in_use(tmp_path: Path) -> None:
    one, two, cert, key, bundle = _files(tmp_path)
    server, _ = _contexts(cert, key, bundle)
    reloader = CertReloader(str(cert), str(key), str(bundle), [server])
    before = reloader.report()["ca_sha256"]
    for garbage in (b"", b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"):
        bundle.write_bytes(garbage)
        assert reloader.check() is False
        assert reloader.error is not None
        assert reloader.report()["ca_sha256"] == before
        assert reloader.current == [server]
    peer_two = client_ssl_context(*map(str, certs.make_cert(tmp_path / "p2", "p2", two)),
                                  str(one / "ca.pem"))
    assert accepted(handshake(peer_two, server))
