"""berth's sealed-secret format, written independently with pyca/cryptography's AESGCM, for
tests/tests/secrets_interop.rs: `seal` prints a record for berth to open, `open` decrypts a
record berth sealed. The layout follows scheduler/src/secrets/envelope.rs's documentation:

  value AAD: b"berth-secret-value\\0" | u32 format | u32 len(name) | name | u64 version
  DEK AAD:   b"berth-secret-dek\\0"   | u32 format | u32 len(kek_id) | kek_id
  kek_id:    hex of the first 8 bytes of SHA-256(KEK)

usage: secrets_envelope.py seal KEK_HEX DEK_HEX DEK_NONCE_HEX NONCE_HEX NAME VERSION VALUE_HEX
       secrets_envelope.py open KEK_HEX NAME VERSION RECORD_JSON
"""

import base64
import hashlib
import json
import struct
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT = 1


def lp(s: bytes) -> bytes:
    return struct.pack(">I", len(s)) + s


def value_aad(fmt: int, name: str, version: int) -> bytes:
    return b"berth-secret-value\0" + struct.pack(">I", fmt) + lp(name.encode()) + struct.pack(">Q", version)


def dek_aad(fmt: int, kek_id: str) -> bytes:
    return b"berth-secret-dek\0" + struct.pack(">I", fmt) + lp(kek_id.encode())


def kek_id(kek: bytes) -> str:
    return hashlib.sha256(kek).digest()[:8].hex()


def seal(kek, dek, dek_nonce, nonce, name, version, value):
    kid = kek_id(kek)
    b64 = lambda b: base64.b64encode(b).decode()
    return {
        "format": FORMAT,
        "kek_id": kid,
        "dek_nonce": b64(dek_nonce),
        "wrapped_dek": b64(AESGCM(kek).encrypt(dek_nonce, dek, dek_aad(FORMAT, kid))),
        "nonce": b64(nonce),
        "ciphertext": b64(AESGCM(dek).encrypt(nonce, value, value_aad(FORMAT, name, version))),
    }


def open_record(kek, name, version, record):
    assert record["format"] == FORMAT, record["format"]
    assert record["kek_id"] == kek_id(kek), (record["kek_id"], kek_id(kek))
    d = lambda k: base64.b64decode(record[k])
    dek = AESGCM(kek).decrypt(d("dek_nonce"), d("wrapped_dek"), dek_aad(FORMAT, record["kek_id"]))
    return AESGCM(dek).decrypt(d("nonce"), d("ciphertext"), value_aad(FORMAT, name, version))


def main(argv):
    h = bytes.fromhex
    if argv[1] == "seal":
        kek, dek, dn, n, name, version, value = argv[2:]
        print(json.dumps(seal(h(kek), h(dek), h(dn), h(n), name, int(version), h(value))))
    elif argv[1] == "open":
        kek, name, version, record = argv[2:]
        print(open_record(h(kek), name, int(version), json.loads(record)).hex())
    else:
        sys.exit(f"unknown mode {argv[1]!r}")


if __name__ == "__main__":
    main(sys.argv)
