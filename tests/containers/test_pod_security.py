"""The restricted-profile check itself: a pod template that passes (the app servers'),
and for each control of the profile a change that breaks it, which the check must name."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from .engine import REPO
from .pod_security import restricted_violations

Change = Callable[[dict[str, Any], dict[str, Any]], None]  # (pod spec, first container)


def app_template() -> dict[str, Any]:
    documents = yaml.safe_load_all((REPO / "deploy" / "k8s" / "app.yaml").read_text())
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    return copy.deepcopy(deployment["spec"]["template"])


def context(container: dict[str, Any]) -> dict[str, Any]:
    return container.setdefault("securityContext", {})


def pod_context(spec: dict[str, Any]) -> dict[str, Any]:
    return spec.setdefault("securityContext", {})


BREAKS: dict[str, tuple[Change, str]] = {
    "host network": (lambda s, c: s.update(hostNetwork=True), "host namespaces"),
    "host PID": (lambda s, c: s.update(hostPID=True), "host namespaces"),
    "privileged": (lambda s, c: context(c).update(privileged=True), "privileged"),
    "hostPath volume": (lambda s, c: s["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
                        "volume types"),
    "nfs volume": (lambda s, c: s["volumes"].append({"name": "n", "nfs": {"server": "x"}}),
                   "volume types"),
    "host port": (lambda s, c: c["ports"][0].update(hostPort=8000), "host ports"),
    "unsafe sysctl": (lambda s, c: pod_context(s).update(sysctls=[{"name": "kernel.msgmax",
                                                                   "value": "1"}]), "sysctls"),
    "escalation unset": (lambda s, c: context(c).pop("allowPrivilegeEscalation"),
                         "privilege escalation"),
    "escalation allowed": (lambda s, c: context(c).update(allowPrivilegeEscalation=True),
                           "privilege escalation"),
    "pod allows root": (lambda s, c: pod_context(s).update(runAsNonRoot=False),
                        "running as non-root"),
    "container allows root": (lambda s, c: context(c).update(runAsNonRoot=False),
                              "running as non-root"),
    "non-root not required": (lambda s, c: pod_context(s).pop("runAsNonRoot"),
                              "running as non-root"),
    "uid 0": (lambda s, c: context(c).update(runAsUser=0), "running as non-root user"),
    "gid 0": (lambda s, c: pod_context(s).update(runAsGroup=0), "non-root groups"),
    "seccomp unset": (lambda s, c: pod_context(s).pop("seccompProfile"), "seccomp"),
    "seccomp unconfined": (lambda s, c: context(c).update(seccompProfile={"type": "Unconfined"}),
                           "seccomp"),
    "capabilities kept": (lambda s, c: context(c)["capabilities"].update(drop=["NET_RAW"]),
                          "capabilities"),
    "capability added": (lambda s, c: context(c)["capabilities"].update(add=["CHOWN"]),
                         "capabilities"),
    "/proc unmasked": (lambda s, c: context(c).update(procMount="Unmasked"), "/proc mount type"),
    "SELinux user": (lambda s, c: context(c).update(seLinuxOptions={"user": "system_u"}),
                     "SELinux"),
    "AppArmor unconfined": (lambda s, c: pod_context(s).update(
        appArmorProfile={"type": "Unconfined"}), "AppArmor"),
    "Windows host process": (lambda s, c: context(c).update(windowsOptions={"hostProcess": True}),
                             "HostProcess"),
    "probe on another host": (lambda s, c: c["readinessProbe"]["httpGet"].update(host="10.1.2.3"),
                              "host probes and lifecycle hooks"),
    "bare init container": (lambda s, c: s.update(initContainers=[{"name": "init", "image": "x"}]),
                            "privilege escalation: container init"),
}

STILL_RESTRICTED: dict[str, Change] = {
    "NET_BIND_SERVICE added": lambda s, c: context(c)["capabilities"].update(
        add=["NET_BIND_SERVICE"]),
    "seccomp on the container only": lambda s, c: (
        pod_context(s).pop("seccompProfile"),
        context(c).update(seccompProfile={"type": "RuntimeDefault"}),
    ),
    "probe on loopback": lambda s, c: c["readinessProbe"]["httpGet"].update(host="127.0.0.1"),
    "secret volume": lambda s, c: s["volumes"].append({"name": "s", "secret": {"secretName": "x"}}),
}


def test_the_app_servers_template_passes() -> None:
    assert restricted_violations(app_template()) == []


@pytest.mark.parametrize("change", BREAKS, ids=list(BREAKS))
def test_each_control_is_checked(change: str) -> None:
    template = app_template()
    mutate, control = BREAKS[change]
    mutate(template["spec"], template["spec"]["containers"][0])
    found = restricted_violations(template)
    assert any(line.startswith(control) for line in found), found


@pytest.mark.parametrize("change", STILL_RESTRICTED, ids=list(STILL_RESTRICTED))
def test_what_the_profile_allows_passes(change: str) -> None:
    template = app_template()
    STILL_RESTRICTED[change](template["spec"], template["spec"]["containers"][0])
    assert restricted_violations(template) == []
