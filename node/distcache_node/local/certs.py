"""A private CA and certificates for mutual TLS between nodes, made with `cryptography`.

New keys are EC P-256. A CA may also be one the user brings (the operator issues node
certificates from the CA in a <name>-ca Secret): RSA or EC; anything else, or a PEM that
does not parse, raises ValueError saying so. A certificate never outlives its CA."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 365  # certificates
CA_VALID_DAYS = 5 * 365


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path = path.with_suffix(".key")
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    key_path.chmod(0o600)


def make_ca(directory: Path, name: str = "DistCache local CA",
            valid_for: datetime.timedelta | None = None) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    valid_for = valid_for or datetime.timedelta(days=CA_VALID_DAYS)
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + valid_for)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        # Key identifiers: while a move to a new CA trusts two CAs, OpenSSL finds a
        # certificate's issuer by name and then by these; without them it may pick the other
        # CA and fail with "certificate signature failure".
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    _write(directory / "ca", cert, key)
    return directory / "ca.pem", directory / "ca.key"


def load_ca(cert_pem: bytes, key_pem: bytes
            ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey]:
    """A CA that can sign: a PEM certificate and its own PEM key, RSA or EC; ValueError
    saying what is wrong otherwise."""
    try:
        ca_cert = x509.load_pem_x509_certificate(cert_pem)
        ca_key = serialization.load_pem_private_key(key_pem, None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"the CA certificate or key is not a PEM this can read: {exc}") from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"the CA key is {type(ca_key).__name__}: only RSA and EC CAs can sign")
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if ca_key.public_key().public_bytes(serialization.Encoding.DER, spki) != \
            ca_cert.public_key().public_bytes(serialization.Encoding.DER, spki):
        raise ValueError("the CA key does not belong to the CA certificate")
    return ca_cert, ca_key


def make_cert(
    directory: Path, name: str, ca_dir: Path,
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "::1"),
    valid_for: datetime.timedelta | None = None,
) -> tuple[Path, Path]:
    """A certificate for both sides of mutual TLS (server and client auth), valid for
    `valid_for` (VALID_DAYS) but never past its CA's own expiry."""
    ca_cert, ca_key = load_ca((ca_dir / "ca.pem").read_bytes(),
                              (ca_dir / "ca.key").read_bytes())
    valid_for = valid_for or datetime.timedelta(days=VALID_DAYS)
    key = _key()
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(min(now + valid_for, ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca_key.public_key()), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    _write(directory / name, cert, key)
    return directory / f"{name}.pem", directory / f"{name}.key"
