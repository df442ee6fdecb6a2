"""Who may open a connection to whom under a set of NetworkPolicies, without a cluster.

The Kubernetes semantics for pods of one namespace: a pod is isolated for a direction
once a policy of that type selects it, and then a connection needs a rule that allows
it, on the destination's ingress side and on the source's egress side. Peers other than
`podSelector` (namespaces, IP blocks) are not modelled: meeting one is an error, never a
guess. Traffic from the pod's own node (the kubelet's probes) is always allowed and is
not a question asked here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Pod:
    """The labels of a workload's pod template and its named container ports."""

    name: str
    labels: Mapping[str, str]
    ports: Mapping[str, int]  # port name -> container port


def pod_of(workload: Mapping[str, Any]) -> Pod:
    template = workload["spec"]["template"]
    ports = {p["name"]: int(p["containerPort"])
             for c in template["spec"]["containers"] for p in c.get("ports", []) if "name" in p}
    return Pod(workload["metadata"]["name"], dict(template["metadata"]["labels"]), ports)


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A label selector (matchLabels and matchExpressions) against a pod's labels."""
    if not all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = set(expression.get("values") or [])
        match operator:
            case "In":
                ok = labels.get(key) in values
            case "NotIn":
                ok = labels.get(key) not in values
            case "Exists":
                ok = key in labels
            case "DoesNotExist":
                ok = key not in labels
            case _:
                raise ValueError(f"unknown selector operator {operator!r}")
        if not ok:
            return False
    return True


def allowed(policies: Sequence[Mapping[str, Any]], source: Pod, target: Pod, port: int,
            protocol: str = "TCP") -> bool:
    """Whether `source` may connect to `target` on `port`/`protocol`."""
    return (_side(policies, "Ingress", selected=target, peer=source, target=target, port=port,
                  protocol=protocol)
            and _side(policies, "Egress", selected=source, peer=target, target=target, port=port,
                      protocol=protocol))


def _types(policy: Mapping[str, Any]) -> list[str]:
    spec = policy["spec"]
    default = ["Ingress", "Egress"] if "egress" in spec else ["Ingress"]
    return list(spec.get("policyTypes") or default)


def _side(policies: Sequence[Mapping[str, Any]], direction: str, *, selected: Pod, peer: Pod,
          target: Pod, port: int, protocol: str) -> bool:
    """One direction: not isolated, or some rule of a policy selecting `selected` allows."""
    relevant = [p for p in policies
                if direction in _types(p) and selects(p["spec"]["podSelector"], selected.labels)]
    if not relevant:
        return True
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for policy in relevant:
        for rule in policy["spec"].get(key) or []:
            if _peer_matches(rule.get(peers_key), peer) and _port_matches(
                rule.get("ports"), target, port, protocol
            ):
                return True
    return False


def _peer_matches(peers: Sequence[Mapping[str, Any]] | None, pod: Pod) -> bool:
    if not peers:
        return True  # no `from`/`to`: every peer
    for peer in peers:
        unmodelled = set(peer) - {"podSelector"}
        if unmodelled:
            raise NotImplementedError(f"peer kinds not modelled here: {sorted(unmodelled)}")
        if selects(peer["podSelector"], pod.labels):
            return True
    return False


def _port_matches(ports: Sequence[Mapping[str, Any]] | None, target: Pod, port: int,
                  protocol: str) -> bool:
    if not ports:
        return True  # no `ports`: every port
    for entry in ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        if "port" not in entry:
            return True
        number = entry["port"]
        if isinstance(number, str):  # a named port is the destination pod's container port
            if number not in target.ports:
                continue
            number = target.ports[number]
        if number <= port <= entry.get("endPort", number):
            return True
    return False
