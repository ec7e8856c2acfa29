"""Entry point the Pulumi CLI runs for `pulumi preview --policy-pack policy` (it starts the analyzer server)."""

from lsdb_guardrails import PACK_NAME, POLICIES
from pulumi_policy import EnforcementLevel, PolicyPack

PolicyPack(
    name=PACK_NAME,
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=POLICIES,
)
