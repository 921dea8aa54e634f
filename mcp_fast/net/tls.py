"""TLS on the listening socket: the SSL context, ALPN, and certificate reload.

``TlsSettings`` are the operator's files; ``build_context`` checks them and makes
an ``ssl.SSLContext`` that offers ALPN ``h2`` and ``http/1.1`` (RFC 7301; RFC 9113
section 3.2: HTTP/2 over TLS is chosen by ALPN only) and TLS 1.2 or later (RFC
9113 section 9.2). A file that is missing, unreadable or does not fit raises
``TlsConfigError`` with a sentence that names the flag and the file.

``CertificateStore`` keeps the context that new handshakes use. The listening
socket keeps its first context for good, so a reload cannot be done by swapping
it: instead that context's SNI callback (called on every ClientHello, with or
without a server name) moves each new handshake to the newest context. Open
connections keep the certificate they were made with; a reload whose files are
bad is refused and the old certificate stays.
"""

from __future__ import annotations

import enum
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CertificateStore", "ClientCerts", "TlsConfigError", "TlsSettings", "build_context"]

logger = logging.getLogger("mcp_fast.net")

ALPN_H2 = "h2"
ALPN_HTTP11 = "http/1.1"


class TlsConfigError(ValueError):
    """A TLS file or option that cannot be used; the message names flag and file."""


class ClientCerts(enum.Enum):
    """``--ssl-cert-reqs``: whether clients must present a certificate (mutual TLS); the flag's
    text (config.CERT_REQS, which also takes uvicorn's 0/1/2) is a member's name."""

    NONE = ssl.CERT_NONE
    OPTIONAL = ssl.CERT_OPTIONAL
    REQUIRED = ssl.CERT_REQUIRED


@dataclass(frozen=True)
class TlsSettings:
    certfile: str
    keyfile: str = ""  # "": the key is in the certificate file
    keyfile_password: str = ""
    ca_certs: str = ""  # CA certificates that verify client certificates
    cert_reqs: ClientCerts = ClientCerts.NONE
    http2: bool = True  # offer h2 in ALPN


class _NoPassword(Exception):
    """The key is encrypted and no --keyfile-password was given."""


def _readable_pem(flag: str, name: str, marker: bytes, what: str) -> bytes:
    path = Path(name)
    if not path.exists():
        raise TlsConfigError(f"{flag} {name}: no such file")
    if not path.is_file():
        raise TlsConfigError(f"{flag} {name}: not a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"{flag} {name}: cannot be read ({exc.strerror or exc})") from exc
    if marker not in data:
        raise TlsConfigError(f"{flag} {name}: no PEM {what} in it")
    return data


def _check_files(settings: TlsSettings) -> None:
    """Each file exists, is readable and holds what its flag says, before OpenSSL
    reads them (its errors name neither the flag nor the file)."""
    _readable_pem("--certfile", settings.certfile, b"-----BEGIN CERTIFICATE-----", "certificate")
    if settings.keyfile:
        _readable_pem("--keyfile", settings.keyfile, b"PRIVATE KEY-----", "private key")
    else:
        _readable_pem("--certfile", settings.certfile, b"PRIVATE KEY-----", "private key (give --keyfile)")
    if settings.ca_certs:
        _readable_pem("--ssl-ca-certs", settings.ca_certs, b"-----BEGIN CERTIFICATE-----", "certificate")
    elif settings.cert_reqs is not ClientCerts.NONE:
        raise TlsConfigError("--ssl-cert-reqs optional/required needs --ssl-ca-certs (the clients' CA)")


def _encrypted(path: Path) -> bool:
    """A PEM key encrypted with a password (PKCS#8 or the traditional OpenSSL form)."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return b"ENCRYPTED PRIVATE KEY-----" in data or b"Proc-Type: 4,ENCRYPTED" in data


def _load_chain(context: ssl.SSLContext, settings: TlsSettings) -> None:
    key = settings.keyfile or settings.certfile
    key_flag = "--keyfile" if settings.keyfile else "--certfile"

    def password() -> bytes:
        if not settings.keyfile_password:
            raise _NoPassword
        return settings.keyfile_password.encode()

    try:
        context.load_cert_chain(settings.certfile, settings.keyfile or None, password=password)
    except _NoPassword:
        raise TlsConfigError(f"{key_flag} {key}: the key is encrypted; give --keyfile-password") from None
    except ssl.SSLError as exc:
        reason = (exc.reason or "").upper()
        if "MISMATCH" in reason:
            raise TlsConfigError(
                f"{key_flag} {key}: the private key does not match the certificate in "
                f"--certfile {settings.certfile}"
            ) from None
        if settings.keyfile_password and _encrypted(Path(key)):
            raise TlsConfigError(f"{key_flag} {key}: --keyfile-password does not decrypt the key") from None
        raise TlsConfigError(
            f"--certfile {settings.certfile} / {key_flag} {key}: cannot be loaded ({exc.reason or exc})"
        ) from None


def build_context(settings: TlsSettings) -> ssl.SSLContext:
    """A server context from ``settings``; raises ``TlsConfigError``."""
    _check_files(settings)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 9113 section 9.2
    context.options |= ssl.OP_NO_COMPRESSION  # RFC 9113 section 9.2.1
    _load_chain(context, settings)
    if settings.ca_certs:
        try:
            context.load_verify_locations(cafile=settings.ca_certs)
        except ssl.SSLError as exc:
            raise TlsConfigError(
                f"--ssl-ca-certs {settings.ca_certs}: cannot be loaded ({exc.reason or exc})"
            ) from None
    context.verify_mode = settings.cert_reqs.value
    context.set_alpn_protocols([ALPN_H2, ALPN_HTTP11] if settings.http2 else [ALPN_HTTP11])
    return context


class CertificateStore:
    """The context of the listening socket, and the newest one that handshakes use."""

    def __init__(self, settings: TlsSettings) -> None:
        self.settings = settings
        self.listening = build_context(settings)  # raises TlsConfigError
        self.current = self.listening
        self.listening.sni_callback = self._select

    def _select(self, connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        """Every ClientHello: use the newest certificate."""
        current = self.current
        if current is not context:
            connection.context = current

    def reload(self) -> bool:
        """Read the files again (SIGHUP); on any error the old certificate stays."""
        try:
            context = build_context(self.settings)
        except TlsConfigError as exc:
            logger.error("certificate reload failed, the old certificate stays in use: %s", exc)
            return False
        self.current = context
        # The pid tells the workers of --workers apart (each reloads on the SIGHUP passed on).
        logger.warning("reloaded the TLS certificate from %s (pid %d)", self.settings.certfile, os.getpid())
        return True


def negotiated_h2(transport: object) -> bool:
    """The TLS handshake of ``transport`` chose HTTP/2 (ALPN)."""
    get_extra_info = getattr(transport, "get_extra_info", None)
    if get_extra_info is None:
        return False
    ssl_object = get_extra_info("ssl_object")
    return ssl_object is not None and ssl_object.selected_alpn_protocol() == ALPN_H2
