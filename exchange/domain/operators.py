"""Who may send operator commands: the API signs them, the risk stage verifies the signature.

Roles live in the API (api/keys.py); the risk stage only sees the commands topic, which any
Kafka client with write access can append to. So the API, having checked the caller's
operator key, signs each operator command with HMAC-SHA256 under a secret only it and the
risk stage hold (CX_OPERATOR_KEYS), and risk refuses a command whose signature does not
verify as `not_operator`. The signature covers the whole command (who, what and why), so
none of it can be altered on the way.

Several keys may verify while only the first signs: a rotated-out key must stay listed for as
long as commands it signed may be replayed, or a replay would decide differently.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import TypeVar

from exchange.domain.messages import (
    ApproveGrant,
    ControlMarket,
    CreateProgramme,
    FundDiscountPool,
    GrantConcession,
    RejectApplication,
    RequestApplicationInfo,
    ResolveDispute,
    SetAccountLimits,
    SetVoucherPolicy,
    encode,
)

OperatorCommand = (
    ControlMarket
    | SetAccountLimits
    | ResolveDispute
    | CreateProgramme
    | ApproveGrant
    | RequestApplicationInfo
    | RejectApplication
    | GrantConcession
    | FundDiscountPool
    | SetVoucherPolicy
)
"""Commands of operators and programme administrators: roles only the API can check."""


Signed = TypeVar("Signed", ControlMarket, SetAccountLimits, ResolveDispute, CreateProgramme,
                 ApproveGrant, RequestApplicationInfo, RejectApplication, GrantConcession,
                 SetVoucherPolicy, FundDiscountPool)  # fmt: skip


class OperatorSeal:
    """Signs operator commands with the first key and verifies them with any."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys or not all(keys):
            raise ValueError("an operator seal needs at least one non-empty key")
        self._keys = tuple(keys)

    def sign(self, command: Signed) -> Signed:
        """The command with its signature under the signing key."""
        return command.model_copy(update={"signature": _mac(self._keys[0], command)})

    def verify(self, command: OperatorCommand) -> bool:
        """Whether the command's signature is one of the keys' over its content."""
        return any(hmac.compare_digest(command.signature, _mac(key, command)) for key in self._keys)


def _mac(key: bytes, command: OperatorCommand) -> str:
    # The wire form without the signature: compact JSON in declaration order, so the API and
    # the risk stage compute it over the same bytes.
    unsigned = encode(command.model_copy(update={"signature": ""}))
    return hmac.new(key, unsigned, hashlib.sha256).hexdigest()
