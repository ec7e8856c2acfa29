"""When the stack's TLS material rotates (docs/security.md#certificate-rotation): fixed epochs counted from ANCHOR
(days before it are epoch 0), pure functions of the day: the program reads the clock once, so preview == up."""

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
