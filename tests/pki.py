"""Test certificates made with the `cryptography` package: a CA, and server or client certificates it signs."""

from __future__ import annotations

import datetime
import ipaddress
import itertools
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_SERIALS = itertools.count(1000)


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path

    def der(self) -> bytes:
        certificate = x509.load_pem_x509_certificate(self.cert.read_bytes())
        return certificate.public_bytes(serialization.Encoding.DER)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(folder: Path, name: str, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Issued:
    issued = Issued(folder / f"{name}.crt", folder / f"{name}.key")
    issued.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    issued.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))  # fmt: skip
    return issued


def _builder(subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(next(_SERIALS))
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2)))


def authority(folder: Path, name: str) -> Issued:
    """A self-signed CA (P-256 key, valid two days)."""
    key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False)  # fmt: skip
    certificate = (_builder(name, _name(name), key)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .add_extension(usage, critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                   .sign(key, hashes.SHA256()))  # fmt: skip
    return _write(folder, name, certificate, key)


def issue(folder: Path, ca: Issued, name: str, *, client: bool = False, ip: str = "127.0.0.1") -> Issued:
    """A certificate `ca` signs: a client's, or a server's for `ip`."""
    ca_certificate = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False)  # fmt: skip
    purpose = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (_builder(name, ca_certificate.subject, key)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=False)
               .add_extension(usage, critical=True)
               .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False))  # fmt: skip
    if not client:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                                        critical=False)  # fmt: skip
    return _write(folder, name, builder.sign(ca_key, hashes.SHA256()), key)
