# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Shared X.509 helpers for the clusterlink.fabric certificate modules.

Private module_utils (leading underscore): not a public API, it may change at any time.

Works with ``cryptography`` 3.4 and later (Debian bookworm ships 38.0.4), so that the
``gateway_key`` module runs with a distribution's ``python3-cryptography`` on the gateways.
Nothing in here ever returns or logs private key bytes: the only thing derived from a key
that leaves this file is the SHA-256 fingerprint of its *public* half.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import tempfile
import traceback

from ansible.module_utils.basic import missing_required_lib

try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError:
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None

# datetime.UTC needs Python 3.11; modules must also run on older target Pythons.
UTC = datetime.timezone.utc  # noqa: UP017

REGENERATE_CHOICES = ["never", "fail", "full_idempotence", "always"]
# The O(regenerate) option of the modules that keep a key or certificate.
REGENERATE_OPTION = {"type": "str", "default": "full_idempotence", "choices": REGENERATE_CHOICES}

# Certificate profiles (extended key usages) of the leaf certificates the CA modules issue:
# a gateway is a TLS server and client on the peer port; the admin listener's certificate only
# serves, and the operator's admin certificate is only a client (so neither can stand in for
# the other).
PROFILES = {
    "gateway": ("serverAuth", "clientAuth"),
    "admin_server": ("serverAuth",),
    "admin_client": ("clientAuth",),
}

# Backdating of notBefore, to tolerate small clock differences between hosts.
CLOCK_SKEW = datetime.timedelta(minutes=5)

_DURATION_RE = re.compile(r"^\+?((?:\d+[wdhms])+|\d+)$")
_DURATION_PART_RE = re.compile(r"(\d+)([wdhms])")
_DURATION_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class PKIError(Exception):
    """A problem with the caller's input or files, reported through fail_json."""


def ensure_cryptography(module):
    if not HAS_CRYPTOGRAPHY:
        module.fail_json(
            msg=missing_required_lib("cryptography"), exception=CRYPTOGRAPHY_IMPORT_ERROR
        )


def run_module(module, run):
    """Check the cryptography library, call run(module) and exit with its result or its PKIError."""
    ensure_cryptography(module)
    try:
        result = run(module)
    except PKIError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


def parse_duration(value, option):
    """Parse '30d', '1w2d', '12h', '+90d' or a plain number of seconds into a timedelta."""
    text = str(value).strip()
    match = _DURATION_RE.match(text)
    if not match:
        raise PKIError(
            f"{option}: invalid duration {value!r}; use a number followed by w, d, h, m or s "
            f"(for example 30d, 2w, 12h), or a plain number of seconds"
        )
    body = match.group(1)
    if body.isdigit():
        return datetime.timedelta(seconds=int(body))
    seconds = sum(int(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART_RE.findall(body))
    return datetime.timedelta(seconds=seconds)


def check_peer_name(name, option="peer_name"):
    """Peer names are DNS labels (they are also admin-API object names)."""
    if not isinstance(name, str) or not _DNS_LABEL_RE.match(name):
        raise PKIError(
            f"{option}: {name!r} is not a valid peer name; it must be a DNS label: "
            f'1-63 characters, lowercase letters, digits and "-", starting and ending with a '
            f"letter or digit"
        )


def check_valid_days(days, option="valid_days"):
    if days < 1:
        raise PKIError(f"{option}: must be at least 1, got {days}")


def utcnow():
    return datetime.datetime.now(UTC)


def aware(value):
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def not_before(cert):
    return getattr(cert, "not_valid_before_utc", None) or aware(cert.not_valid_before)


def not_after(cert):
    return getattr(cert, "not_valid_after_utc", None) or aware(cert.not_valid_after)


def iso(value):
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def serial_hex(serial):
    """A serial number as colon-separated hexadecimal, whole bytes (``7B:01``)."""
    text = f"{serial:X}"
    if len(text) % 2:
        text = "0" + text
    return ":".join(text[i : i + 2] for i in range(0, len(text), 2))


def _colon_hex(data):
    return ":".join(f"{b:02X}" for b in data)


# ---------------------------------------------------------------- files


def read_bytes(path):
    """Content of ``path``, or None when it does not exist."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PKIError(f"cannot read {path}: {exc}") from exc


def load_existing(path, load):
    """The file at ``path`` as (bytes, object, findings) for a module that keeps it.

    (None, None, []) when it does not exist; (bytes, None, ["unparseable"]) when ``load``
    raises PKIError on its content; else (bytes, load(bytes), []).
    """
    data = read_bytes(path)
    if data is None:
        return None, None, []
    try:
        return data, load(data), []
    except PKIError:
        return data, None, ["unparseable"]


def write_bytes(module, path, data, secret, option="path"):
    """Write atomically: temp file in the target directory, then ``module.atomic_move``.

    The temp file is created 0600. For secret files the umask is 077 while the file is moved
    into place, so a newly created key is never readable by others, not even for a moment.
    Ownership and the final mode are applied afterwards by the caller with
    ``module.set_fs_attributes_if_different``.
    """
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise PKIError(f"{option}: directory {directory} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".clusterlink-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        old_umask = os.umask(0o077) if secret else None
        try:
            module.atomic_move(tmp, path)
        finally:
            if old_umask is not None:
                os.umask(old_umask)
    except Exception as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise PKIError(f"{option}: cannot write {path}: {exc}") from exc


def file_args(module, path, default_mode):
    """File attributes (owner, group, mode, SELinux) from the module's common file options."""
    args = module.load_file_common_arguments(module.params, path=path)
    if args.get("mode") is None:
        args["mode"] = default_mode
    return args


def apply_file_args(module, args, changed, diff):
    """set_fs_attributes_if_different, skipped for files that check mode did not create."""
    if module.check_file_absent_if_check_mode(args["path"]):
        return changed
    return module.set_fs_attributes_if_different(args, changed, diff)


def write_file(
    module,
    result,
    path,
    content,
    *,
    existed,
    default_mode,
    diff,
    secret=False,
    option="path",
    mode=None,
):
    """Keep one file of a PKI module: backup, atomic write, file options. Return ``changed``.

    The shared tail of the modules that write a key, certificate or CRL. ``content`` is the
    new bytes, or None to keep the file as it is. Outside check mode a new content is written
    atomically (``write_bytes``: a 0600 temp file, umask 077 for a ``secret``), after a
    backup of the previous file (``result["backup_file"]``) when the module's O(backup) is
    set and the file ``existed``. Then owner, group and mode come from the module's file
    options (the mode ``default_mode`` unless O(mode) is set; ``mode`` forces one), skipped
    in check mode for a file that does not exist yet; their changes go into ``diff``.
    Returns whether the content or the attributes changed (or would, in check mode).
    """
    changed = content is not None
    if changed and not module.check_mode:
        if module.params.get("backup") and existed:
            result["backup_file"] = module.backup_local(path)
        write_bytes(module, path, content, secret=secret, option=option)
    args = file_args(module, path, default_mode)
    if mode is not None:
        args["mode"] = mode
    return apply_file_args(module, args, changed, diff)


def file_module_args(**options):
    """AnsibleModule arguments of a module that keeps a file with write_file().

    Its ``options``, plus O(backup) and the common file options (O(mode), O(owner), ...);
    check mode supported.
    """
    options["backup"] = {"type": "bool", "default": False}
    return {"argument_spec": options, "add_file_common_args": True, "supports_check_mode": True}


def finish(module, result, diff):
    """The result with ``diff`` added in diff mode (``--diff``)."""
    if module._diff:
        result["diff"] = diff
    return result


# ---------------------------------------------------------------- keys


def generate_key():
    return ec.generate_private_key(ec.SECP256R1())


def load_private_key(data, passphrase=None):
    """Load a PEM private key; raise PKIError (without the key bytes) when that fails."""
    try:
        password = passphrase.encode("utf-8") if passphrase else None
        return serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError) as exc:
        # The exception text from cryptography never contains key material, but keep it short.
        raise PKIError(
            f"not a readable PEM private key ({exc.__class__.__name__}: {exc})"
        ) from None
    except Exception as exc:  # unsupported algorithm and friends
        raise PKIError(f"not a readable PEM private key ({exc.__class__.__name__})") from None


def private_key_pem(key, passphrase=None):
    if passphrase:
        encryption = serialization.BestAvailableEncryption(passphrase.encode("utf-8"))
    else:
        encryption = serialization.NoEncryption()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def is_p256(key):
    return isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"


def key_type(key):
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return f"ECDSA {key.curve.name}"
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return f"RSA {key.key_size}"
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "Ed25519"
    if isinstance(key, (ed448.Ed448PrivateKey, ed448.Ed448PublicKey)):
        return "Ed448"
    return key.__class__.__name__


def _spki(public_key):
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_fingerprint(public_key):
    """SHA-256 over the DER SubjectPublicKeyInfo, as colon-separated hex."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(_spki(public_key))
    return _colon_hex(digest.finalize())


def same_public_key(a, b):
    return _spki(a) == _spki(b)


def _sign_hash(key):
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        return None
    return hashes.SHA256()


def key_facts(key):
    """Public facts about a private key, for diff and return values."""
    if key is None:
        return {}
    return {
        "type": key_type(key),
        "public_key_fingerprint": public_key_fingerprint(key.public_key()),
    }


# ---------------------------------------------------------------- certificates


def load_certificate(data):
    """Parse a PEM certificate (the first one, if several); raise PKIError when invalid."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    try:
        return x509.load_pem_x509_certificate(data)
    except Exception as exc:
        raise PKIError(f"not a PEM certificate ({exc.__class__.__name__})") from None


def certificate_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def load_csr(data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    try:
        csr = x509.load_pem_x509_csr(data)
    except Exception as exc:
        raise PKIError(
            f"csr_content: not a PEM certificate signing request ({exc.__class__.__name__})"
        ) from None
    if not csr.is_signature_valid:
        raise PKIError(
            "csr_content: the CSR signature is invalid (no proof of possession of the key)"
        )
    return csr


def _extension(cert, ext_type):
    try:
        return cert.extensions.get_extension_for_class(ext_type).value
    except x509.ExtensionNotFound:
        return None


def common_names(obj):
    return [a.value for a in obj.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def dns_names(cert):
    san = _extension(cert, x509.SubjectAlternativeName)
    return sorted(san.get_values_for_type(x509.DNSName)) if san else []


def ip_names(cert):
    san = _extension(cert, x509.SubjectAlternativeName)
    return sorted(str(ip) for ip in san.get_values_for_type(x509.IPAddress)) if san else []


def san_strings(cert):
    """The certificate's DNS and IP subject alternative names as ``DNS:x`` / ``IP:y``, sorted."""
    return sorted([f"DNS:{n}" for n in dns_names(cert)] + [f"IP:{ip}" for ip in ip_names(cert)])


_DNS_NAME_RE = re.compile(
    r"^(?=.{1,253}$)(\*|[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)


def parse_subject_alt_names(values, option="subject_alt_names"):
    """``["DNS:west.example", "IP:10.0.0.1"]`` (a bare name or address is accepted too) as
    canonical, sorted ``DNS:``/``IP:`` strings without duplicates; PKIError naming the entry."""
    canonical = set()
    for value in values:
        text = str(value).strip()
        kind, sep, body = text.partition(":")
        if not sep or kind.upper() not in ("DNS", "IP"):
            kind, body = "", text
        kind = kind.upper()
        try:
            address = ipaddress.ip_address(body)
        except ValueError:
            address = None
        if kind == "IP" or (not kind and address is not None):
            if address is None:
                raise PKIError(f"{option}: {value!r} is not an IP address")
            canonical.add(f"IP:{address}")
        elif _DNS_NAME_RE.match(body.lower()):
            canonical.add(f"DNS:{body.lower()}")
        else:
            raise PKIError(f"{option}: {value!r} is neither a DNS name nor an IP address")
    return sorted(canonical)


def _general_names(sans):
    names = []
    for entry in sans:
        kind, body = entry.split(":", 1)
        if kind == "IP":
            names.append(x509.IPAddress(ipaddress.ip_address(body)))
        else:
            names.append(x509.DNSName(body))
    return names


_EKU_NAMES = {"serverAuth": "SERVER_AUTH", "clientAuth": "CLIENT_AUTH"}


def _eku_oids(profile):
    return [getattr(ExtendedKeyUsageOID, _EKU_NAMES[u]) for u in PROFILES[profile]]


def _ski(cert):
    ext = _extension(cert, x509.SubjectKeyIdentifier)
    return ext.digest if ext else None


def _aki(cert):
    ext = _extension(cert, x509.AuthorityKeyIdentifier)
    return ext.key_identifier if ext else None


def is_ca(cert):
    constraints = _extension(cert, x509.BasicConstraints)
    return bool(constraints and constraints.ca)


def certificate_facts(cert):
    """Public, parsed facts of a certificate: what diff and the return values show."""
    if cert is None:
        return {}
    digest = hashes.Hash(hashes.SHA256())
    digest.update(cert.public_bytes(serialization.Encoding.DER))
    ski, aki = _ski(cert), _aki(cert)
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "subject_alt_names": [f"DNS:{name}" for name in dns_names(cert)]
        + [f"IP:{ip}" for ip in ip_names(cert)],
        "serial_number": cert.serial_number,
        "not_before": iso(not_before(cert)),
        "not_after": iso(not_after(cert)),
        "is_ca": is_ca(cert),
        "fingerprint_sha256": _colon_hex(digest.finalize()),
        "public_key_fingerprint": public_key_fingerprint(cert.public_key()),
        "subject_key_identifier": _colon_hex(ski) if ski else None,
        "authority_key_identifier": _colon_hex(aki) if aki else None,
    }


def signed_by(cert, issuer_cert):
    """True when issuer_cert's key verifies cert's signature."""
    verify = getattr(cert, "verify_directly_issued_by", None)
    if verify is not None:
        try:
            verify(issuer_cert)
            return True
        except (ValueError, TypeError, InvalidSignature):
            return False
    if cert.issuer != issuer_cert.subject:
        return False
    public_key = issuer_cert.public_key()
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(
                cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
            )
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(
                cert.signature,
                cert.tbs_certificate_bytes,
                padding.PKCS1v15(),
                cert.signature_hash_algorithm,
            )
        else:
            public_key.verify(cert.signature, cert.tbs_certificate_bytes)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _renewal_reasons(cert, renew_before, now):
    reasons = []
    if not_after(cert) - now <= renew_before:
        reasons.append("expiring")
    if not_before(cert) > now + CLOCK_SKEW:
        reasons.append("not_yet_valid")
    return reasons


def ca_reasons(cert, key, fabric_name, renew_before, now):
    """Why the CA certificate must be re-created (empty list: it is fine)."""
    reasons = []
    if not same_public_key(cert.public_key(), key.public_key()):
        reasons.append("public_key")
    if common_names(cert) != [fabric_name] or cert.subject != cert.issuer:
        reasons.append("names")
    constraints = _extension(cert, x509.BasicConstraints)
    usage = _extension(cert, x509.KeyUsage)
    if not (constraints and constraints.ca and usage and usage.key_cert_sign):
        reasons.append("profile")
    return reasons + _renewal_reasons(cert, renew_before, now)


def leaf_reasons(
    cert, ca_cert, public_key, peer_name, renew_before, now, sans=None, profile="gateway"
):
    """Why a leaf certificate must be re-issued (empty list: it is fine).

    ``sans``: the wanted subject alternative names as canonical ``DNS:``/``IP:`` strings
    (default: ``DNS:<peer_name>`` only); ``profile``: a key of PROFILES.
    """
    reasons = []
    if not same_public_key(cert.public_key(), public_key):
        reasons.append("public_key")
    wanted = sorted(sans) if sans else [f"DNS:{peer_name}"]
    if common_names(cert) != [peer_name] or san_strings(cert) != wanted:
        reasons.append("names")
    ca_ski, aki = _ski(ca_cert), _aki(cert)
    if (
        cert.issuer != ca_cert.subject
        or (ca_ski and aki and ca_ski != aki)
        or not signed_by(cert, ca_cert)
    ):
        reasons.append("issuer")
    constraints = _extension(cert, x509.BasicConstraints)
    eku = _extension(cert, x509.ExtendedKeyUsage)
    tls_usages = {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    if (
        constraints is None
        or constraints.ca
        or eku is None
        or set(eku) & tls_usages != set(_eku_oids(profile))
    ):
        reasons.append("profile")
    return reasons + _renewal_reasons(cert, renew_before, now)


def _validity(builder, now, days, cap=None):
    end = now + datetime.timedelta(days=days)
    if cap is not None and end > cap:
        end = cap
    return builder.not_valid_before(now - CLOCK_SKEW).not_valid_after(end)


def build_ca_certificate(key, fabric_name, valid_days, now):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, fabric_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    return _validity(builder, now, valid_days).sign(key, _sign_hash(key))


def build_gateway_certificate(
    ca_cert, ca_key, public_key, peer_name, valid_days, now, sans=None, profile="gateway"
):
    """Leaf certificate (CN ``peer_name``, SANs ``sans`` or ``DNS:<peer_name>``, extended key
    usages of ``profile``); validity is capped at the CA's notAfter."""
    ca_ski = _ski(ca_cert)
    if ca_ski is not None:
        aki = x509.AuthorityKeyIdentifier(
            key_identifier=ca_ski, authority_cert_issuer=None, authority_cert_serial_number=None
        )
    else:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, peer_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(_eku_oids(profile)), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(_general_names(sans or [f"DNS:{peer_name}"])),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(aki, critical=False)
    )
    builder = _validity(builder, now, valid_days, cap=not_after(ca_cert))
    return builder.sign(ca_key, _sign_hash(ca_key))


def build_csr(key, peer_name):
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, peer_name)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(peer_name)]), critical=False)
        .sign(key, _sign_hash(key))
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def regenerate_decision(module, policy, exists, reasons, what):
    """Apply the ``regenerate`` policy; return the reasons to act on (empty: keep it).

    ``reasons`` are the findings about an existing object (``unparseable`` when it cannot be
    read). ``never`` keeps any readable object; ``fail`` fails instead of replacing an
    existing object; ``full_idempotence`` replaces when there is a reason; ``always``
    replaces on every run.
    """
    if not exists:
        return ["missing"]
    if policy == "always":
        return ["forced"]
    if not reasons:
        return []
    if policy == "never":
        if "unparseable" in reasons:
            module.fail_json(msg=f"{what} exists but cannot be read, and regenerate=never")
        return []
    if policy == "fail":
        module.fail_json(
            msg=f"{what} would have to be regenerated ({', '.join(reasons)}), but regenerate=fail",
            reasons=reasons,
        )
    return list(reasons)
