"""The notebook end to end without a cluster (issue 21's proof): the stack's rendered notebook Deployment started
locally (tools/notebook_emulator.py: its command, env and mounts as the kubelet would run them) beside the same
stack's DaskCluster run by tools/pod_emulator.py, the catalog claim holding the fixture catalog where the
provisioning Job would have copied it; the starter notebook, read back through the server's contents API, executed
in a kernel of that Jupyter server (REST + websocket), must return exactly the rows lsdb returns directly, over
mutual TLS with the client bundle the notebook's Secret mounts (certificates from a test CA standing in for
pulumi-tls). One server, one kernel: about 35 s on the shared 2-core machine, most of it the emulated cluster's
start and the workers' first lsdb import.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
from pathlib import Path
from typing import Any

import pytest

from components.notebook import STARTER, TOKEN_FILE, notebook_name
from tests.program_helpers import live_objects, run_with
from tools.notebook_emulator import EmulatedNotebook, api, resolve, run_cells
from tools.pod_emulator import EmulatedCluster

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).parent / "fixtures" / "catalogs"
CONE = {"ra": 180.0, "dec": 0.0, "radiusArcsec": 3600.0}  # the dense field of the fixture rows
COLUMNS = ["id", "ra", "dec"]
TOKEN = "t0k3n-" + "a" * 40
CLUSTER = "nb"
NS = "lsdb-test"  # tests.program_helpers.BASE


@pytest.fixture(scope="module")
def rendered() -> dict[str, Any]:
    """The stack under test, with `security.tls` (the shipped default but dev's). Without TLS the pod differs only
    in its environment and mounts (tests/test_notebook.py)."""
    run = run_with(
        storage={"kind": "pvc", "size": "1Gi"},
        security={"tls": True},
        cluster={
            "name": CLUSTER,
            "workers": {"replicas": 1, "memory": "1Gi", "threads": 2},
            "autoscaler": {"enabled": False},
        },
        catalogs={"plain": {"source": "https://catalogs.example.org/plain"}},
        verify={"enabled": False, "cone": CONE, "columns": COLUMNS},
        notebook={"enabled": True},
    )
    objects = live_objects(run)

    def one(kind: str, name: str) -> dict[str, Any]:
        (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
        return found

    (daskcluster,) = [o for o in objects if o["kind"] == "DaskCluster"]
    return {
        "daskcluster": daskcluster,
        "stable": one("Service", f"{CLUSTER}-scheduler"),
        "deployment": one("Deployment", f"{CLUSTER}-notebook"),
    }


def tls_secrets(daskcluster: dict[str, Any], directory: Path) -> tuple[dict[str, dict[str, str]], Any]:
    """The cluster's certificate Secret and the notebook's client bundle from one test CA (standing in for
    pulumi-tls, as in tests/test_e2e_tls.py), and a Security for this test's own client (waiting for workers)."""
    from distributed.security import Security

    from components.cluster import TLS_FILES
    from components.security import certificate_dns_names
    from tests.support.certs import Authority

    live = daskcluster["metadata"]["name"]
    # The certificate Secret the cluster's pods mount (its name carries the TLS epoch: components/tls_schedule.py).
    volumes = daskcluster["spec"]["scheduler"]["spec"]["volumes"]
    (cluster_secret,) = [v["secret"]["secretName"] for v in volumes if v["name"] == "dask-tls"]
    services = [f"{CLUSTER}-scheduler", f"{live}-scheduler"]
    ca = Authority.create("lsdb-k8s test CA")
    server, client = ca.issue(services[0], certificate_dns_names(services, NS)), ca.issue("lsdb-client", server=False)
    bundle = {TLS_FILES["ca"]: ca.pem.cert, TLS_FILES["cert"]: client.cert, TLS_FILES["key"]: client.key}
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in bundle.items():
        (directory / name).write_text(text)
    secrets = {
        cluster_secret: {**bundle, TLS_FILES["cert"]: server.cert, TLS_FILES["key"]: server.key},
        notebook_name(CLUSTER, "tls"): bundle,
    }
    security = Security(
        tls_ca_file=str(directory / TLS_FILES["ca"]),
        tls_client_cert=str(directory / TLS_FILES["cert"]),
        tls_client_key=str(directory / TLS_FILES["key"]),
        require_encryption=True,
    )
    return secrets, security


def direct_rows(path: Path) -> Any:
    import dask
    import lsdb

    with dask.config.set(scheduler="synchronous"):
        catalog = lsdb.open_catalog(
            str(path), columns=COLUMNS, search_filter=lsdb.ConeSearch(CONE["ra"], CONE["dec"], CONE["radiusArcsec"])
        )
        return catalog.compute(progress_bar=False)


def sorted_rows(df: Any) -> Any:
    return df.reset_index().sort_values("id").reset_index(drop=True)


def test_the_notebook_command_is_in_the_notebook_image_only(rendered: dict[str, Any]) -> None:
    """`jupyter-lab` comes with docker/notebook-requirements.lock: the cluster image's PATH has no Jupyter."""
    from tools.emulated_image import resolve_executable

    command = rendered["deployment"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert resolve(command[0]).name == "jupyter-lab"
    with pytest.raises(FileNotFoundError, match="executable file not found"):
        resolve_executable(command[0])


def test_starter_notebook_through_the_jupyter_server_returns_lsdbs_rows(
    rendered: dict[str, Any], tmp_path: Path
) -> None:
    """One server, one kernel; the wrong token refused; the starter's rows over mutual TLS."""
    claim = tmp_path / "claim"
    shutil.copytree(FIXTURES / "plain", claim / "catalogs" / "plain")  # where the provisioning Job copies it
    expected = sorted_rows(direct_rows(FIXTURES / "plain"))
    assert len(expected) > 100, "the cone should hold a few hundred rows"
    secrets, security = tls_secrets(rendered["daskcluster"], tmp_path / "client")
    secrets[notebook_name(CLUSTER, "token")] = {TOKEN_FILE: TOKEN}
    claims = {"hats-catalog-pvc": claim}
    with EmulatedCluster(
        rendered["daskcluster"], tmp_path / "cluster", claims=claims, secrets=secrets, services=[rendered["stable"]]
    ) as cluster:
        notebook = EmulatedNotebook(
            rendered["deployment"], tmp_path / "notebook", cluster=cluster, claims=claims, secrets=secrets
        )
        with notebook:
            notebook.launch(timeout=120)  # JupyterLab starts while the cluster does (it needs no scheduler)
            cluster.start(timeout=120)
            cluster.wait_for_workers(timeout=120, security=security)
            notebook.wait_ready(timeout=120)
            # The token Secret guards the server: a wrong token is refused.
            with pytest.raises(urllib.error.HTTPError) as refused:
                api(notebook.url, "wrong-token", "/api/contents")
            assert refused.value.code == 403
            # The init container put the image's starter into the (emptyDir) home: the server lists it.
            starter = api(notebook.url, TOKEN, f"/api/contents/{STARTER}")
            cells = [c["source"] for c in starter["content"]["cells"] if c["cell_type"] == "code"]
            out = tmp_path / "notebook" / "rows.pickle"
            # After the starter's cells: the rows leave the kernel as a file, and who computed them.
            probe = (
                f"rows.to_pickle({str(out)!r})\n"
                "import dask\n"
                "print(json.dumps({'address': client.scheduler.address, 'default': dask.base.get_scheduler() "
                "== client.get, 'workers': len(client.scheduler_info()['workers'])}))"
            )
            results = run_cells(notebook.url, TOKEN, [*cells, probe])
            errors = [o for cell in results for o in cell if o["msg_type"] == "error"]
            assert errors == [], "\n".join(e["ename"] + ": " + e["evalue"] for e in errors) + notebook.logs()
            assert len(results) == len(cells) + 1
            info = json.loads(results[-1][-1]["text"])
            assert info == {"address": cluster.scheduler_address, "default": True, "workers": 1}
            assert info["address"].startswith("tls://")
    import pandas as pd

    pd.testing.assert_frame_equal(sorted_rows(pd.read_pickle(out)), expected)
    assert cluster.leftover_pids() == []
