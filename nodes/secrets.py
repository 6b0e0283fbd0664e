"""A node's own secrets, generated where the node runs and kept apart from the data they unlock.

`RUN/nodes/<agency>.secrets/` (or `$HEALTHPSI_NODE_SECRETS/<agency>/`), a directory of mode 0700 holding
files of mode 0600: the Ed25519 identity key (`identity.key`), the TLS key (`tls.key`), the storage key that
wraps static partition keys (`storage.key`) and the day keys that wrap day partition keys (`days/`). The
node's state directory (`RUN/nodes/<agency>/`) holds only what these keys seal, plus the node's enrollment
request (`request.json`): its TLS certificate request and its identity public key, signed by that key.
`healthpsi node init` writes both; the authority (`runctx.enroll`) reads only the request.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from crypto.drbg import Rng, default_rng
from crypto.pki import (
    DNS_SUFFIX,
    STORAGE_KEY_BYTES,
    agency_name,
    ec_private_key,
    ed25519_private_key,
    load_ec_private_key,
    load_identity_key,
    load_storage_key,
)
from runctx.files import write_atomic

SECRETS_ENV = "HEALTHPSI_NODE_SECRETS"
"""When set, a node's secrets live in `$HEALTHPSI_NODE_SECRETS/<agency>/` instead of next to the run."""
REQUEST_FILE = "request.json"


class NodeSecretsError(ValueError):
    """A node's secrets that are missing or readable by others."""


@dataclass(frozen=True)
class NodeSecrets:
    """Where one node's secrets live."""

    directory: Path

    @classmethod
    def of(cls, run_dir: Path, agency: str) -> NodeSecrets:
        """The secrets of `agency`'s node in this run (see the module docstring for where)."""
        name = agency_name(agency)
        base = os.environ.get(SECRETS_ENV)
        return cls(Path(base) / name if base else Path(run_dir) / "nodes" / f"{name}.secrets")

    @property
    def identity_key(self) -> Path:
        """Ed25519 identity key (manifest and audit-head signatures), PKCS8 PEM."""
        return self.directory / "identity.key"

    @property
    def tls_key(self) -> Path:
        """TLS server private key (P-256), PKCS8 PEM."""
        return self.directory / "tls.key"

    @property
    def storage_key(self) -> Path:
        """32 raw bytes wrapping the static partitions' keys."""
        return self.directory / "storage.key"

    @property
    def day_keys(self) -> Path:
        """The day keys wrapping the day partitions' keys (`nodes.keys.KeyStore`)."""
        return self.directory / "days"

    def files(self) -> list[Path]:
        """The key files `node init` writes."""
        return [self.identity_key, self.tls_key, self.storage_key]

    def check(self) -> None:
        """Refuse to start on secrets that are missing or that group or others may read (NodeSecretsError
        naming the file and the fix)."""
        for path in [self.directory, *self.files()]:
            try:
                mode = stat.S_IMODE(path.stat().st_mode)
            except FileNotFoundError:
                raise NodeSecretsError(
                    f"{path} is missing: run `healthpsi node init` for this node, then "
                    "`healthpsi keys enroll`"
                ) from None
            if mode & 0o077:
                fix = "700" if path == self.directory else "600"
                raise NodeSecretsError(f"{path} is readable by others (mode {mode:o}): chmod {fix} {path}")

    def load_identity(self) -> ed25519.Ed25519PrivateKey:
        """The node's identity key, after `check`."""
        self.check()
        return load_identity_key(self.identity_key)

    def load_storage(self) -> bytes:
        """The node's storage key, after `check`."""
        self.check()
        return load_storage_key(self.storage_key)

    def load_tls(self) -> ec.EllipticCurvePrivateKey:
        """The node's TLS key, after `check`."""
        self.check()
        return load_ec_private_key(self.tls_key)


def request_path(run_dir: Path, agency: str) -> Path:
    """RUN/nodes/<agency>/request.json: the node's enrollment request."""
    return Path(run_dir) / "nodes" / agency_name(agency) / REQUEST_FILE


def _pem(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    """Unencrypted PKCS8 PEM of a private key."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def init_node(run_dir: Path, agency: str, rng: Rng | None = None, *, force: bool = False) -> Path:
    """Generate a node's identity, TLS and storage keys in its secrets directory and write its enrollment
    request; return the request's path. Refuses (FileExistsError) to replace existing keys unless `force`."""
    name = agency_name(agency)
    secrets = NodeSecrets.of(run_dir, name)
    if secrets.identity_key.exists() and not force:
        raise FileExistsError(f"{secrets.directory} already holds this node's keys; --force replaces them")
    rng = default_rng(rng)
    identity = ed25519_private_key(rng.child("identity"))
    tls = ec_private_key(rng.child("tls"))
    secrets.directory.mkdir(parents=True, exist_ok=True)
    secrets.directory.chmod(0o700)
    write_atomic(secrets.identity_key, _pem(identity), private=True)
    write_atomic(secrets.tls_key, _pem(tls), private=True)
    write_atomic(secrets.storage_key, rng.child("storage").random_bytes(STORAGE_KEY_BYTES), private=True)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name + DNS_SUFFIX)]))
        .sign(tls, hashes.SHA256(), ecdsa_deterministic=True)
        .public_bytes(serialization.Encoding.PEM)
    )
    identity_public = identity.public_key().public_bytes(serialization.Encoding.Raw,
                                                         serialization.PublicFormat.Raw)
    request = {
        "agency": name,
        "csr": csr.decode(),
        "identity_key": identity_public.hex(),
        "identity_signature": identity.sign(csr).hex(),
    }
    path = request_path(run_dir, name)
    write_atomic(path, (json.dumps(request, indent=2, sort_keys=True) + "\n").encode())
    return path
