"""Start-up checks that need the file system or a library: session keys, the Unix socket path,
the TLS certificate and key.

``config.py`` checks each value and how values go together; these look further, at what the
values name. Each failure is a ``StartupError`` whose message names the flag; ``app.run`` logs
it and exits with 2 before anything is served, instead of failing every ``initialize`` later.
"""

from __future__ import annotations

import logging
import os
import socket
import stat

from mcp_fast.config import Config
from mcp_fast.fleet.redis_fleet import RedisExtraMissing, import_redis
from mcp_fast.net.tls import ClientCerts, TlsConfigError, TlsSettings, build_context

logger = logging.getLogger("mcp_fast")

# RFC 7518 section 3.2: an HS256 key "of the same size as the hash output ... or larger MUST be used".
MIN_SECRET_BYTES = 32
# RFC 7518 section 3.3: "A key of size 2048 bits or larger MUST be used" with RS256.
MIN_RSA_BITS = 2048
# Linux: sun_path holds 108 bytes, the last one a NUL.
MAX_SOCKET_PATH_BYTES = 107


class StartupError(Exception):
    """A setting that names something unusable (a key file, a socket path)."""


def check_startup(config: Config) -> None:
    """Everything that can be known wrong before serving; warnings for what is merely unwise."""
    if config.transport != "http":
        return
    if config.uds:
        check_unix_socket(config.uds)
    else:
        check_host(config.host)
    check_tls(config)
    if config.effective_session_mode == "jwt" and config.session_algorithm != "HS256":
        check_session_keys(config.session_algorithm, config.session_private_key, config.session_public_keys)
    warn_about_short_secrets(config.session_secret)
    if config.redis:
        check_redis_extra()


def check_redis_extra() -> None:
    """--redis needs the redis package (an optional extra). Whether Redis answers is not checked
    here: an instance starts without it and reports not-ready until it is reachable."""
    try:
        import_redis()
    except RedisExtraMissing as exc:
        raise StartupError(str(exc)) from None


def warn_about_short_secrets(secrets: list[str]) -> None:
    short = [len(secret.encode()) for secret in secrets if len(secret.encode()) < MIN_SECRET_BYTES]
    if short:
        logger.warning(
            "--session-secret: a secret of %d bytes is easy to guess; HS256 wants %d bytes or more "
            "(RFC 7518 section 3.2): make one with `openssl rand -hex 32`",
            min(short),
            MIN_SECRET_BYTES,
        )


def tls_settings(config: Config) -> TlsSettings | None:
    """--certfile and its companions as the network layer takes them (None: cleartext)."""
    if not config.certfile:
        return None
    return TlsSettings(
        certfile=config.certfile,
        keyfile=config.keyfile,
        keyfile_password=config.keyfile_password,
        ca_certs=config.ssl_ca_certs,
        cert_reqs=ClientCerts[config.ssl_cert_reqs.upper()],
        http2=config.http2,
    )


def check_tls(config: Config) -> None:
    """The TLS files are read once, as the server will read them (before --workers fork): a
    missing, unreadable or mismatched one is named with its flag."""
    settings = tls_settings(config)
    if settings is None:
        return
    try:
        build_context(settings)
    except TlsConfigError as exc:
        raise StartupError(str(exc)) from None


def check_host(host: str) -> None:
    """An address to bind: a literal, or a name that resolves (binding it may still fail: in
    use, or not this machine's; that is exit 1 when the server starts to listen)."""
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else "not a valid host name"
        raise StartupError(f"--host {host}: not an address to bind ({reason})") from None


def check_unix_socket(path: str) -> None:
    where = f"--uds {path}"
    if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
        raise StartupError(
            f"{where}: longer than the {MAX_SOCKET_PATH_BYTES} bytes a Unix socket path may have"
        )
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise StartupError(f"{where}: the directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StartupError(f"{where}: this process cannot create a socket in {directory}")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise StartupError(f"{where}: exists and is not a socket (remove it, or choose another path)")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # left behind by a server that is gone: ours to replace
            return
    raise StartupError(f"{where}: another server is listening on it")


def check_session_keys(algorithm: str, private_key_file: str, public_key_files: list[str]) -> None:
    """The key files exist, hold keys of the algorithm's type, and one public key verifies what
    the private key signs (otherwise every ``initialize`` would answer 500). pyjwt is imported
    here only: HS256 sessions do without it (transport/tokens.py)."""
    import jwt
    from jwt.algorithms import get_default_algorithms

    if algorithm not in get_default_algorithms():
        raise StartupError(
            f"--session-algorithm {algorithm} needs the cryptography package, which pyjwt's crypto "
            "extra brings: pip install 'pyjwt[crypto]'"
        )
    private_pem = _read_pem("--session-private-key", private_key_file)
    _check_private_key(algorithm, private_key_file, private_pem)
    public_pems = [_read_pem("--session-public-keys", path) for path in public_key_files]
    for path, pem in zip(public_key_files, public_pems, strict=True):
        _check_public_key(algorithm, path, pem)
    token = jwt.encode({"probe": True}, private_pem, algorithm=algorithm)
    if not any(_verifies(token, pem, algorithm) for pem in public_pems):
        raise StartupError(
            f"--session-public-keys {','.join(public_key_files)}: none of them verifies what "
            f"--session-private-key {private_key_file} signs (list its own public key)"
        )


def _read_pem(flag: str, path: str) -> str:
    try:
        with open(path, encoding="ascii") as file:
            return file.read()
    except OSError as exc:
        raise StartupError(f"{flag} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise StartupError(f"{flag} {path}: not a PEM file (PEM is ASCII text)") from None


def _check_private_key(algorithm: str, path: str, pem: str) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except TypeError:  # it is encrypted
        raise StartupError(
            f"--session-private-key {path}: the key is encrypted; give it unencrypted"
        ) from None
    except ValueError:
        raise StartupError(f"--session-private-key {path}: not a PEM private key") from None
    _check_key_type("--session-private-key", path, algorithm, key.public_key())


def _check_public_key(algorithm: str, path: str, pem: str) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(pem.encode())
    except ValueError:
        raise StartupError(f"--session-public-keys {path}: not a PEM public key") from None
    _check_key_type("--session-public-keys", path, algorithm, key)


def _check_key_type(flag: str, path: str, algorithm: str, public_key: object) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if algorithm == "RS256":
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise StartupError(f"{flag} {path}: RS256 needs an RSA key, this is {_key_kind(public_key)}")
        if public_key.key_size < MIN_RSA_BITS:
            raise StartupError(
                f"{flag} {path}: an RSA key of {public_key.key_size} bits; RS256 needs {MIN_RSA_BITS} "
                "bits or more (RFC 7518 section 3.3)"
            )
    elif algorithm == "ES256" and not (
        isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.name == "secp256r1"
    ):
        raise StartupError(f"{flag} {path}: ES256 needs an EC key on P-256, this is {_key_kind(public_key)}")


def _key_kind(public_key: object) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(public_key, rsa.RSAPublicKey):
        return f"an RSA key of {public_key.key_size} bits"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"an EC key on {public_key.curve.name}"
    return f"a {type(public_key).__name__.removeprefix('_')}"


def _verifies(token: str, public_pem: str, algorithm: str) -> bool:
    import jwt

    try:
        jwt.decode(token, public_pem, algorithms=[algorithm])
    except jwt.InvalidTokenError:
        return False
    return True
