"""When the stack's TLS material rotates: fixed epochs counted from one constant day, pure functions of the date.

Dask loads its certificate once, at start: a certificate rewritten under a running cluster never reaches it. So a
rotation is a new cluster. The epoch tag (`g0-ca0-c1`: `security.tlsGeneration`, CA epoch, certificate epoch) is in
the certificate Secret's name, which is in the cluster's `<h>` (components/cluster.py): the first `pulumi up` of a
new epoch starts a new cluster with new certificates (blue/green: verified, switched, the old one deleted with its
Secret at the end of the same `pulumi up`).

* certificates (server and client) rotate every CERT_ROTATION_DAYS and are valid CERT_VALIDITY_DAYS from the day
  they are issued (a `pulumi up` in their epoch): a stack left without `pulumi up` for CERT_VALIDITY_DAYS -
  CERT_ROTATION_DAYS (1.5 years) after a rotation still serves;
* the CA rotates every CA_ROTATION_DAYS (a whole number of certificate epochs: a CA rotation is a certificate
  rotation, one new cluster) and is valid CA_VALIDITY_DAYS: a certificate is issued in the CA's epoch at the
  latest, so it expires at most CA_ROTATION_DAYS + CERT_VALIDITY_DAYS after the CA was issued, before the CA;
* `security.tlsGeneration` (raised by hand after a leaked key) is in every tag: new keys, CA and certificates now.

Days before ANCHOR count as epoch 0. The program reads the clock once (components/program.py); everything here
takes the day, so the same day gives the same names (preview == up) and tests pass any day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

ANCHOR = date(2026, 1, 1)
CERT_ROTATION_DAYS = 180
CERT_VALIDITY_DAYS = 730
CA_ROTATION_DAYS = 10 * CERT_ROTATION_DAYS  # 1800 days, about 4.9 years
CA_VALIDITY_DAYS = 10 * 365  # as the previous release's CA: an upgraded stack keeps its CA (and clients' bundles)
CERT_WARNING_DAYS = 30  # `pulumi up` warns this long before a certificate rotation
CA_WARNING_DAYS = 60  # ... and this long before a CA rotation (clients then need the new bundle)
EXPIRY_WARNING_DAYS = 30  # ... and when a certificate it holds expires within this many days


@dataclass(frozen=True)
class TlsSchedule:
    """The epochs `today` is in, and when they end (the first day of the next)."""

    generation: int
    ca_epoch: int
    cert_epoch: int
    next_ca_rotation: date
    next_cert_rotation: date

    @property
    def ca_tag(self) -> str:
        return f"g{self.generation}-ca{self.ca_epoch}"

    @property
    def tag(self) -> str:
        """In the certificate Secret's name and the certificates' subjects: a new tag is a new cluster."""
        return f"{self.ca_tag}-c{self.cert_epoch}"


def certificate_schedule(today: date, generation: int = 0) -> TlsSchedule:
    if generation < 0:
        raise ValueError(f"generation {generation} < 0")
    days = max(0, (today - ANCHOR).days)
    ca_epoch, cert_epoch = days // CA_ROTATION_DAYS, days // CERT_ROTATION_DAYS
    return TlsSchedule(
        generation=generation,
        ca_epoch=ca_epoch,
        cert_epoch=cert_epoch,
        next_ca_rotation=ANCHOR + timedelta(days=(ca_epoch + 1) * CA_ROTATION_DAYS),
        next_cert_rotation=ANCHOR + timedelta(days=(cert_epoch + 1) * CERT_ROTATION_DAYS),
    )


def rotation_warnings(today: date, schedule: TlsSchedule) -> list[str]:
    """What `pulumi up` on `today` warns about the coming rotations (none outside the warning windows)."""
    ca_days = (schedule.next_ca_rotation - today).days
    if ca_days <= CA_WARNING_DAYS:
        return [
            f"security.tls: the stack's CA rotates on {schedule.next_ca_rotation.isoformat()} (in {ca_days} days): "
            "the first `pulumi up` on or after that day starts a new cluster with a new CA and new certificates; "
            "clients then need the new `clientTls` bundle (`pulumi stack output --show-secrets clientTls`), "
            "bundles of the old CA are refused by the new cluster"
        ]
    cert_days = (schedule.next_cert_rotation - today).days
    if cert_days <= CERT_WARNING_DAYS:
        return [
            f"security.tls: the certificates rotate on {schedule.next_cert_rotation.isoformat()} (in {cert_days} "
            "days): the first `pulumi up` on or after that day starts a new cluster (blue/green) with new "
            "certificates of the same CA; clients' bundles keep working"
        ]
    return []


def expiry_warnings(what: str, validity_end: str | None, today: date) -> list[str]:
    """A warning when `validity_end` (pulumi-tls's RFC 3339 `validity_end_time`) is within EXPIRY_WARNING_DAYS of
    `today` or past: stacks deployed by an earlier release, and anything the schedule did not foresee."""
    if not validity_end:  # unknown in a preview of a new certificate
        return []
    end = datetime.fromisoformat(validity_end.replace("Z", "+00:00")).date()
    days = (end - today).days
    if days > EXPIRY_WARNING_DAYS:
        return []
    state = f"expired on {end.isoformat()}" if days < 0 else f"expires on {end.isoformat()} (in {days} days)"
    return [
        f"security.tls: the {what} {state}: Dask loads it once, at start, so a running cluster refuses new clients "
        "and workers once it expires; raise `security.tlsGeneration` by one and run `pulumi up` to start a new "
        "cluster with new certificates"
    ]
