"""Certificates that never expire in a running cluster (issue 20, defect 2).

The schedule's arithmetic (components/tls_schedule.py), its warnings, and the program under mocks on given days:
a new TLS epoch is a new certificate Secret, hence a new `<h>` and a new cluster (blue/green), the old Secret
outliving the old cluster within the `pulumi up`."""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Any

import pulumi
import pytest

from components.config import read_stack_config
from components.program import program
from components.security import tls_secret_name
from components.tls_schedule import (
    ANCHOR,
    CA_ROTATION_DAYS,
    CA_VALIDITY_DAYS,
    CA_WARNING_DAYS,
    CERT_ROTATION_DAYS,
    CERT_VALIDITY_DAYS,
    CERT_WARNING_DAYS,
    EXPIRY_WARNING_DAYS,
    certificate_schedule,
    expiry_warnings,
    rotation_warnings,
)
from tests.program_helpers import BASE, PLATFORM_STACK_OUTPUTS, dask_cluster
from tools.mock_runtime import EngineMocks, ProgramRun, run_program

SECRET = "kubernetes:core/v1:Secret"
DASK_CLUSTER = "kubernetes:kubernetes.dask.org/v1:DaskCluster"

# --- the schedule ---------------------------------------------------------------------------------------------


def test_epochs_change_on_their_first_day() -> None:
    rotation = ANCHOR + timedelta(days=CERT_ROTATION_DAYS)
    assert certificate_schedule(rotation - timedelta(days=1)).tag == "g0-ca0-c0"
    assert certificate_schedule(rotation).tag == "g0-ca0-c1"
    assert certificate_schedule(rotation - timedelta(days=1)).next_cert_rotation == rotation == date(2026, 6, 30)
    ca_rotation = ANCHOR + timedelta(days=CA_ROTATION_DAYS)
    before, after = certificate_schedule(ca_rotation - timedelta(days=1)), certificate_schedule(ca_rotation)
    assert (before.tag, after.tag) == ("g0-ca0-c9", "g0-ca1-c10")  # a CA rotation is a certificate rotation
    assert before.next_ca_rotation == ca_rotation == before.next_cert_rotation
    assert after.next_ca_rotation == ca_rotation + timedelta(days=CA_ROTATION_DAYS)


def test_days_before_the_anchor_are_epoch_zero_and_the_generation_is_in_every_tag() -> None:
    assert certificate_schedule(date(2025, 6, 1)).tag == "g0-ca0-c0"
    assert certificate_schedule(date(2026, 7, 1), generation=3).tag == "g3-ca0-c1"
    assert certificate_schedule(date(2026, 7, 1), generation=3).ca_tag == "g3-ca0"
    with pytest.raises(ValueError):
        certificate_schedule(ANCHOR, generation=-1)


def test_the_ca_outlives_every_certificate_it_signs() -> None:
    # A certificate is issued in its CA's epoch at the latest: CA_ROTATION_DAYS after the CA at most.
    assert CA_ROTATION_DAYS % CERT_ROTATION_DAYS == 0
    assert CA_ROTATION_DAYS + CERT_VALIDITY_DAYS < CA_VALIDITY_DAYS
    # A certificate outlives its epoch and the warnings: a missed rotation is not an outage.
    assert CERT_VALIDITY_DAYS > CERT_ROTATION_DAYS + CERT_WARNING_DAYS + EXPIRY_WARNING_DAYS


@pytest.mark.parametrize("every", [1, 7, 179, 181, 400, CERT_VALIDITY_DAYS - CERT_ROTATION_DAYS])
def test_a_stack_updated_at_least_every_one_and_a_half_years_never_serves_an_expired_certificate(every: int) -> None:
    """Fifteen years of `pulumi up` every `every` days (pulumi-tls issues on the day of the `up` that changes the
    tag, valid from that day): every day, the live certificate and its CA are valid, the CA longer."""
    ca_issued = cert_issued = day = ANCHOR - timedelta(days=100)  # deployed by the previous release
    tag = certificate_schedule(day).tag
    for offset in range(15 * 365):
        today = day + timedelta(days=offset)
        if offset % every == 0:
            schedule = certificate_schedule(today)
            if schedule.tag != tag:
                cert_issued = today
                if schedule.ca_tag != tag.rsplit("-", 1)[0]:
                    ca_issued = today
                tag = schedule.tag
        cert_end = cert_issued + timedelta(days=CERT_VALIDITY_DAYS)
        ca_end = ca_issued + timedelta(days=CA_VALIDITY_DAYS)
        assert today < cert_end <= ca_end, (today, tag)


# --- warnings -------------------------------------------------------------------------------------------------


def test_pulumi_up_warns_within_30_days_of_a_certificate_rotation() -> None:
    day = date(2026, 6, 30) - timedelta(days=CERT_WARNING_DAYS)
    (message,) = rotation_warnings(day, certificate_schedule(day))
    assert "rotate on 2026-06-30 (in 30 days)" in message and "starts a new cluster" in message
    assert "keep working" in message
    day -= timedelta(days=1)
    assert rotation_warnings(day, certificate_schedule(day)) == []


def test_pulumi_up_warns_within_60_days_of_a_ca_rotation_that_clients_need_the_new_bundle() -> None:
    rotation = ANCHOR + timedelta(days=CA_ROTATION_DAYS)
    day = rotation - timedelta(days=CA_WARNING_DAYS)
    (message,) = rotation_warnings(day, certificate_schedule(day))
    assert f"CA rotates on {rotation.isoformat()} (in 60 days)" in message and "`clientTls`" in message
    day -= timedelta(days=1)
    assert rotation_warnings(day, certificate_schedule(day)) == []
    day = rotation - timedelta(days=1)  # also a certificate rotation: one warning, the CA's
    (message,) = rotation_warnings(day, certificate_schedule(day))
    assert "CA rotates" in message


def test_a_certificate_close_to_its_end_warns() -> None:
    today = date(2027, 3, 1)
    (message,) = expiry_warnings("cluster's certificate", "2027-03-31T10:00:00Z", today)
    assert "expires on 2027-03-31 (in 30 days)" in message and "security.tlsGeneration" in message
    (message,) = expiry_warnings("stack's CA", "2027-02-01T00:00:00.123456Z", today)
    assert "stack's CA expired on 2027-02-01" in message
    assert expiry_warnings("cluster's certificate", "2027-04-01T00:00:00Z", today) == []
    assert expiry_warnings("cluster's certificate", None, today) == []  # unknown: a preview of a new certificate


def test_the_warnings_say_what_happens_and_what_to_do_in_full() -> None:
    """The messages a user reads, word for word (they are the whole interface of these warnings)."""
    day = date(2026, 6, 20)
    assert rotation_warnings(day, certificate_schedule(day)) == [
        "security.tls: the certificates rotate on 2026-06-30 (in 10 days): the first `pulumi up` on or after that "
        "day starts a new cluster (blue/green) with new certificates of the same CA; clients' bundles keep working"
    ]
    rotation = ANCHOR + timedelta(days=CA_ROTATION_DAYS)
    day = rotation - timedelta(days=5)
    assert rotation_warnings(day, certificate_schedule(day)) == [
        f"security.tls: the stack's CA rotates on {rotation.isoformat()} (in 5 days): the first `pulumi up` on or "
        "after that day starts a new cluster with a new CA and new certificates; clients then need the new "
        "`clientTls` bundle (`pulumi stack output --show-secrets clientTls`), bundles of the old CA are refused by "
        "the new cluster"
    ]
    today = date(2027, 3, 1)
    advice = (
        ": Dask loads it once, at start, so a running cluster refuses new clients and workers once it expires; "
        "raise `security.tlsGeneration` by one and run `pulumi up` to start a new cluster with new certificates"
    )
    assert expiry_warnings("cluster's certificate", "2027-03-02T00:00:00Z", today) == [
        "security.tls: the cluster's certificate expires on 2027-03-02 (in 1 days)" + advice
    ]
    # The last day is "expires ... (in 0 days)", the day after "expired"; a "Z" suffix and an offset both parse.
    assert expiry_warnings("CA", "2027-03-01T23:00:00Z", today) == [
        "security.tls: the CA expires on 2027-03-01 (in 0 days)" + advice
    ]
    assert expiry_warnings("CA", "2027-02-28T23:00:00+00:00", today) == [
        "security.tls: the CA expired on 2027-02-28" + advice
    ]


def test_the_anchor_day_is_epoch_zero_and_a_negative_generation_is_refused() -> None:
    assert certificate_schedule(ANCHOR).tag == "g0-ca0-c0"
    assert certificate_schedule(ANCHOR + timedelta(days=CERT_ROTATION_DAYS - 1)).cert_epoch == 0
    with pytest.raises(ValueError, match="generation -1 < 0"):
        certificate_schedule(ANCHOR, -1)


# --- the program on given days ----------------------------------------------------------------------------------


def run_on(day: date, mocks: type[EngineMocks] | None = None, **sections: Any) -> ProgramRun:
    """The program (as tests.program_helpers.run_with runs it) on `day`."""
    raw = {**BASE, "security": {"tls": True, "networkPolicy": False}, **sections}
    config = {f"lsdb-k8s:{k}": json.dumps(v) if isinstance(v, dict | list) else v for k, v in raw.items()}

    def entry() -> None:
        for key, value in program(read_stack_config(), today=day).items():
            pulumi.export(key, value)

    if mocks is None:
        return run_program(config, stack="test", stack_outputs=PLATFORM_STACK_OUTPUTS, program=entry)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("tools.mock_runtime.EngineMocks", mocks)
        return run_program(config, stack="test", stack_outputs=PLATFORM_STACK_OUTPUTS, program=entry)


def names(run: ProgramRun) -> tuple[str, str]:
    """(live cluster name, certificate Secret name)."""
    return run.outputs["clusterName"], run.one(SECRET).inputs["metadata"]["name"]


def test_a_new_certificate_epoch_starts_a_new_cluster_with_a_new_secret() -> None:
    first, same_epoch, next_epoch = run_on(date(2026, 2, 1)), run_on(date(2026, 6, 29)), run_on(date(2026, 7, 1))
    assert names(first) == names(same_epoch)  # the same epoch: the same names, whatever the day
    (live, secret), (new_live, new_secret) = names(first), names(next_epoch)
    assert secret == tls_secret_name("lsdb-cluster", "g0-ca0-c0") and new_secret.endswith("-tls-g0-ca0-c1")
    assert new_live != live and new_live.startswith("lsdb-cluster-")  # a new `<h>`: blue/green
    for run in (first, next_epoch):
        volumes = dask_cluster(run)["spec"]["scheduler"]["spec"]["volumes"]
        assert {"name": "dask-tls", "secret": {"secretName": names(run)[1], "defaultMode": 0o440}} in volumes
        assert run.outputs["tlsNextRotation"] == ("2026-06-30" if run is first else "2026-12-27")
        assert run.outputs["tlsNextCaRotation"] == "2030-12-06"


def test_the_same_day_gives_the_same_names() -> None:
    """Preview and up on one day agree (nothing else in the program reads the clock)."""
    day = date(2027, 1, 2)
    assert names(run_on(day)) == names(run_on(day))


def test_a_new_generation_starts_a_new_cluster_now() -> None:
    day = date(2026, 3, 1)
    base = names(run_on(day))
    raised = names(run_on(day, security={"tls": True, "networkPolicy": False, "tlsGeneration": 1}))
    assert raised[0] != base[0] and raised[1] == "lsdb-cluster-tls-g1-ca0-c0"


def test_the_old_secret_outlives_the_old_cluster() -> None:
    """Pulumi deletes what left the program in reverse dependency order: the DaskCluster (every resource of the
    cluster) depends on the Secret, so the old cluster goes first. The Secret is a new resource per epoch (its
    logical name carries the tag): the old one is deleted with the old cluster at the end of a successful
    `pulumi up`, never at the start of the next one after a failed one."""
    run = run_on(date(2026, 7, 1))
    secret = run.one(SECRET)
    assert secret.name.endswith("-g0-ca0-c1")
    assert secret.urn in run.one(DASK_CLUSTER).dependencies


class ExpiringMocks(EngineMocks):
    """pulumi-tls's `validity_end_time`, as if every certificate ended ten days after 2027-03-01."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        resource_id, state = super().new_resource(args)
        if args.typ.startswith("tls:index/") and args.typ.endswith("Cert"):
            state["validityEndTime"] = "2027-03-11T12:00:00Z"
        return resource_id, state


def test_pulumi_up_warns_when_a_certificate_it_holds_is_about_to_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    warned: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *a, **k: warned.append(message))
    run = run_on(date(2027, 3, 1), ExpiringMocks)
    assert run.outputs["tlsCertificateExpiry"] == "2027-03-11T12:00:00Z"
    assert len([w for w in warned if "expires on 2027-03-11 (in 10 days)" in w]) == 3  # the CA, server, client
    warned.clear()
    run_on(date(2027, 1, 1), ExpiringMocks)
    assert warned == []
