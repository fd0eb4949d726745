"""Test certificates made with the `openssl` command: a CA, and server or client certificates it signs."""

from __future__ import annotations

import itertools
import subprocess
from dataclasses import dataclass
from pathlib import Path

_CONFIG = """[req]
distinguished_name = dn
prompt = no
[dn]
CN = {name}
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = {alt}
[client]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
"""
_SERIALS = itertools.count(1000)


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path

    def der(self) -> bytes:
        done = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"], capture_output=True,
                              check=True)  # fmt: skip
        return done.stdout


def _openssl(folder: Path, name: str, alt: str, *arguments: str) -> None:
    config = folder / f"{name}.cnf"
    config.write_text(_CONFIG.format(name=name, alt=alt), encoding="utf-8")
    subprocess.run(["openssl", *[argument.replace("@config", str(config)) for argument in arguments]],
                   check=True, capture_output=True)  # fmt: skip


def authority(folder: Path, name: str) -> Issued:
    """A self-signed CA (P-256 key, valid two days)."""
    issued = Issued(folder / f"{name}.crt", folder / f"{name}.key")
    _openssl(folder, name, "IP:127.0.0.1", "req", "-x509", "-new", "-config", "@config", "-extensions", "ca",
             "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
             "-keyout", str(issued.key), "-out", str(issued.cert))  # fmt: skip
    return issued


def issue(folder: Path, ca: Issued, name: str, *, client: bool = False, ip: str = "127.0.0.1") -> Issued:
    """A certificate `ca` signs: a client's, or a server's for `ip`."""
    issued = Issued(folder / f"{name}.crt", folder / f"{name}.key")
    request = folder / f"{name}.csr"
    _openssl(folder, name, f"IP:{ip}", "req", "-new", "-config", "@config", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(issued.key), "-out", str(request))  # fmt: skip
    _openssl(folder, name, f"IP:{ip}", "x509", "-req", "-in", str(request), "-CA", str(ca.cert), "-CAkey",
             str(ca.key), "-set_serial", str(next(_SERIALS)), "-days", "2", "-extfile", "@config",
             "-extensions", "client" if client else "server", "-out", str(issued.cert))  # fmt: skip
    return issued
