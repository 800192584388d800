"""The small crypto package: thin wrappers over pyca/cryptography and galois, each with KATs.

- ``kex``: X25519 key agreement (RFC 7748)
- ``kdf``: HKDF-SHA256 (RFC 5869) with fixed-width domain separation
- ``aead``: AES-256-GCM for the encrypted shares
- ``prg``: the AES-256-CTR mask PRG writing into NumPy buffers
- ``shamir``: t-of-k sharing of 32-byte secrets over GF(2^31 + 11)
- ``randomness``: the injected randomness source (OS CSPRNG, or deterministic for tests)
"""
