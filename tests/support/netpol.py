"""A small evaluator of Kubernetes NetworkPolicies: may this pod (or address) open this port on that one?

Test support, not product code. Semantics from the Kubernetes documentation
(https://kubernetes.io/docs/concepts/services-networking/network-policies/ and the API reference of
NetworkPolicySpec, NetworkPolicyPeer, NetworkPolicyPort, LabelSelector):

* a connection is allowed only if the source's egress AND the destination's ingress allow it;
* a pod is isolated for ingress (egress) when at least one NetworkPolicy of its namespace selects it and lists
  that type in `policyTypes` (default: Ingress, plus Egress when the policy has `egress` rules); an isolated pod
  admits what any rule of any selecting policy admits (policies are additive); a pod no policy selects, and an
  address outside the cluster, is not isolated;
* a rule admits a connection when one of its peers matches (no `from`/`to` = every peer) and one of its ports
  matches (no `ports` = every port);
* a peer: `podSelector` alone = pods of the policy's namespace; `namespaceSelector` alone = every pod of the
  selected namespaces; both = selected pods in selected namespaces; `ipBlock` = addresses in the CIDR and not in
  `except` (matched against pod IPs too: the permissive reading, so a "deny" here is a deny everywhere);
* a port: `protocol` (default TCP) and `port` (a number, with `endPort` a range; a name = the destination pod's
  container port of that name; absent = every port);
* a label selector: every `matchLabels` pair and every `matchExpressions` requirement (In, NotIn, Exists,
  DoesNotExist) must hold; `{}` selects everything (policy/lsdb_guardrails.py's `selector_matches`).
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# One label-selector implementation: the policy pack's (the policy directory is its own package root).
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "policy"))
from lsdb_guardrails import selector_matches

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: Mapping[str, str]
    ip: str
    ports: tuple[tuple[str, int, str], ...] = ()  # (name, containerPort, protocol)

    def named_port(self, name: str, protocol: str) -> int | None:
        return next((n for p_name, n, proto in self.ports if p_name == name and proto == protocol), None)


@dataclass(frozen=True)
class External:
    """An address outside the cluster (an object store, a DNS server on the internet)."""

    name: str
    ip: str


Endpoint = Pod | External


@dataclass
class Cluster:
    policies: list[Mapping[str, Any]]
    namespace_labels: dict[str, dict[str, str]] = field(default_factory=dict)

    def labels_of_namespace(self, namespace: str) -> dict[str, str]:
        return {NAMESPACE_NAME_LABEL: namespace, **self.namespace_labels.get(namespace, {})}

    def allowed(self, source: Endpoint, destination: Endpoint, port: int, protocol: str = "TCP") -> bool:
        """Both directions must allow: the source's egress and the destination's ingress."""
        return self._direction(source, destination, port, protocol, "Egress") and self._direction(
            destination, source, port, protocol, "Ingress", destination_is_self=True
        )

    def _direction(
        self,
        pod: Endpoint,
        peer: Endpoint,
        port: int,
        protocol: str,
        kind: str,
        destination_is_self: bool = False,
    ) -> bool:
        if not isinstance(pod, Pod):
            return True  # outside the cluster: no NetworkPolicy applies
        selecting = [p for p in self.policies if self._selects(p, pod) and kind in policy_types(p)]
        if not selecting:
            return True
        destination = pod if destination_is_self else peer
        rules_key, peers_key = ("ingress", "from") if kind == "Ingress" else ("egress", "to")
        for policy in selecting:
            namespace = policy["metadata"]["namespace"]
            for rule in policy["spec"].get(rules_key) or []:
                peers = rule.get(peers_key)
                peer_ok = not peers or any(self._peer_matches(p, namespace, peer) for p in peers)
                if peer_ok and port_matches(rule.get("ports"), destination, port, protocol):
                    return True
        return False

    def _selects(self, policy: Mapping[str, Any], pod: Pod) -> bool:
        return policy["metadata"]["namespace"] == pod.namespace and selector_matches(
            policy["spec"]["podSelector"], pod.labels
        )

    def _peer_matches(self, peer: Mapping[str, Any], policy_namespace: str, other: Endpoint) -> bool:
        if "ipBlock" in peer:
            block = peer["ipBlock"]
            address = ipaddress.ip_address(other.ip)
            inside = address in ipaddress.ip_network(block["cidr"])
            return inside and not any(address in ipaddress.ip_network(e) for e in block.get("except", []))
        if not isinstance(other, Pod):
            return False  # pod and namespace selectors select pods only
        if "namespaceSelector" in peer:
            namespace_ok = selector_matches(peer["namespaceSelector"], self.labels_of_namespace(other.namespace))
        else:
            namespace_ok = other.namespace == policy_namespace
        pod_ok = selector_matches(peer["podSelector"], other.labels) if "podSelector" in peer else True
        return namespace_ok and pod_ok


def policy_types(policy: Mapping[str, Any]) -> list[str]:
    spec = policy["spec"]
    if spec.get("policyTypes"):
        return list(spec["policyTypes"])
    return ["Ingress", *(["Egress"] if "egress" in spec else [])]


def port_matches(ports: Iterable[Mapping[str, Any]] | None, destination: Endpoint, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        if "port" not in p:
            return True
        value = p["port"]
        if isinstance(value, int):
            if value <= port <= int(p.get("endPort", value)):
                return True
        elif isinstance(destination, Pod) and destination.named_port(str(value), protocol) == port:
            return True
    return False


def pod_from_template(name: str, namespace: str, template: Mapping[str, Any], ip: str) -> Pod:
    """A pod as a Deployment's template makes it: its labels and its containers' declared ports."""
    ports = tuple(
        (p.get("name", ""), int(p["containerPort"]), p.get("protocol", "TCP"))
        for c in template["spec"]["containers"]
        for p in c.get("ports", [])
    )
    return Pod(name, namespace, dict(template["metadata"].get("labels") or {}), ip, ports)
