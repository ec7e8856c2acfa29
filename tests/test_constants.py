"""Our copies of the operator's naming rules and pod labels equal the pinned dask-kubernetes' own."""

from __future__ import annotations

import subprocess
import sys

from components import constants
from components.lock import PROJECT_DIR


def test_operator_names_match_the_pinned_wheel() -> None:
    from dask_kubernetes import constants as operator

    assert constants.SCHEDULER_NAME_TEMPLATE == operator.SCHEDULER_NAME_TEMPLATE
    assert constants.NAME_LIMIT == operator.KUBERNETES_MAX_RESOURCE_NAME_LENGTH
    assert constants.scheduler_service_name("lsdb") == operator.SCHEDULER_NAME_TEMPLATE.format(cluster_name="lsdb")


def test_pod_labels_are_the_ones_the_operator_builders_set() -> None:
    from dask_kubernetes.operator.controller.controller import (
        build_scheduler_deployment_spec,
        build_worker_deployment_spec,
    )

    scheduler = build_scheduler_deployment_spec("c", {"containers": []}, {}, {})
    worker = build_worker_deployment_spec("c-default", "ns", "c", "abc", {"containers": []}, {}, {})
    assert scheduler["spec"]["template"]["metadata"]["labels"][constants.CLUSTER_NAME_LABEL] == "c"
    assert scheduler["spec"]["template"]["metadata"]["labels"][constants.COMPONENT_LABEL] == "scheduler"
    labels = worker["spec"]["template"]["metadata"]["labels"]
    assert (labels[constants.COMPONENT_LABEL], labels[constants.WORKER_GROUP_LABEL]) == ("worker", "c-default")
    assert constants.pod_selector("c", "worker") == "dask.org/cluster-name=c,dask.org/component=worker"


def test_program_evaluation_does_not_import_dask_kubernetes() -> None:
    # Importing dask_kubernetes imports dask and writes ~/.config/dask: the program must not.
    code = "import sys; import components.program; print('dask_kubernetes' in sys.modules, 'dask' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
