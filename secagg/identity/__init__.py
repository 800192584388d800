"""Client identities for the authenticated protocol: the deployment CA, the client registry
(the trust root), each client's Ed25519 identity key, and the CLI that ties them together.

The protocol calls exactly: ``ClientIdentity.sign`` and ``ClientIdentity.public_key_bytes`` on
the client, ``verify_signature`` on whoever checks a signature, and ``Registry.verify_key`` /
``Registry.enrolled`` to learn which key a client id holds.
"""

from secagg.identity.ca import CertificateAuthority, load_certificate, verify_client_certificate
from secagg.identity.keys import ClientIdentity, verify_signature
from secagg.identity.registry import Enrolment, EnrolmentLimits, Registry

__all__ = [
    "CertificateAuthority", "ClientIdentity", "Enrolment", "EnrolmentLimits", "Registry",
    "load_certificate", "verify_client_certificate", "verify_signature",
]
