"""The "restricted" Pod Security Standard, checked on a pod template without a cluster.

The controls are those of the Pod Security Standards page (kubernetes.io, "Pod Security
Standards": everything of the baseline profile plus the restricted one), for the latest
version, as the pod-security admission controller applies them: a pod-level setting
covers the containers that leave it unset, a container may not undo it. Stricter than
the controller in two ways only: it also applies the profile's optional "non-root groups"
control, and it grants no exemption to user-namespace pods.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

# Baseline "Capabilities": what a container may add; the restricted profile narrows it.
BASELINE_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
})
RESTRICTED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes",
})
# Restricted "Volume Types": the only volume sources allowed.
VOLUME_SOURCES = frozenset({
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "image",
    "persistentVolumeClaim", "projected", "secret",
})
PROFILE_TYPES = frozenset({"RuntimeDefault", "Localhost"})  # seccomp and AppArmor
SELINUX_TYPES = frozenset({
    "", "container_t", "container_init_t", "container_kvm_t", "container_engine_t",
})
PROBE_HOSTS = frozenset({"", "127.0.0.1", "::1"})
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"


def restricted_violations(template: Mapping[str, Any]) -> list[str]:
    """What keeps a pod template (`metadata` + `spec`) out of the restricted profile."""
    spec: Mapping[str, Any] = template["spec"]
    annotations: Mapping[str, str] = (template.get("metadata") or {}).get("annotations") or {}
    pod: Mapping[str, Any] = spec.get("securityContext") or {}
    found: list[str] = []

    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            found.append(f"host namespaces: spec.{key}")
    for sysctl in pod.get("sysctls") or []:
        if sysctl["name"] not in SAFE_SYSCTLS:
            found.append(f"sysctls: {sysctl['name']}")
    for volume in spec.get("volumes") or []:
        sources = set(volume) - {"name"}
        if not sources <= VOLUME_SOURCES:
            found.append(f"volume types: {volume['name']} uses {sorted(sources - VOLUME_SOURCES)}")
    for key, value in annotations.items():
        if key.startswith(APPARMOR_ANNOTATION) and not (
            value == "runtime/default" or value.startswith("localhost/")
        ):
            found.append(f"AppArmor: annotation {key}={value}")
    found += _context_violations("pod", pod)
    if pod.get("runAsNonRoot") is False:
        found.append("running as non-root: the pod sets runAsNonRoot=false")
    for group in (pod.get("supplementalGroups") or []) + [pod.get("fsGroup")]:
        if group == 0:
            found.append("non-root groups: the pod adds group 0")
    pod_seccomp = (pod.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in PROFILE_TYPES:
        found.append(f"seccomp: the pod's profile is {pod_seccomp}")

    for container in _containers(spec):
        name = f"container {container['name']}"
        context: Mapping[str, Any] = container.get("securityContext") or {}
        found += _context_violations(name, context)
        if context.get("privileged"):
            found.append(f"privileged: {name}")
        if context.get("procMount", "Default") != "Default":
            found.append(f"/proc mount type: {name} uses {context['procMount']}")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                found.append(f"host ports: {name} binds {port['hostPort']}")
        for host in _probe_and_hook_hosts(container):
            if host not in PROBE_HOSTS:
                found.append(f"host probes and lifecycle hooks: {name} targets {host}")
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"privilege escalation: {name} must set allowPrivilegeEscalation=false")
        non_root = context.get("runAsNonRoot", pod.get("runAsNonRoot"))
        if non_root is not True:
            found.append(f"running as non-root: {name} is not required to run as non-root")
        seccomp = (context.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in PROFILE_TYPES:
            found.append(f"seccomp: {name} runs with profile {seccomp}")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            found.append(f"capabilities: {name} must drop ALL")
        added = set(capabilities.get("add") or [])
        if not added <= RESTRICTED_CAPABILITIES:
            found.append(f"capabilities: {name} adds {sorted(added - RESTRICTED_CAPABILITIES)}")
    return found


def _containers(spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(key) or []


def _context_violations(where: str, context: Mapping[str, Any]) -> list[str]:
    """The controls that read the same fields in a pod's and in a container's context."""
    found: list[str] = []
    if (context.get("windowsOptions") or {}).get("hostProcess"):
        found.append(f"HostProcess: {where}")
    selinux = context.get("seLinuxOptions") or {}
    if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
        found.append(f"SELinux: {where} sets {selinux}")
    apparmor = (context.get("appArmorProfile") or {}).get("type")
    if apparmor is not None and apparmor not in PROFILE_TYPES:
        found.append(f"AppArmor: {where} uses {apparmor}")
    if context.get("runAsUser") == 0:
        found.append(f"running as non-root user: {where} sets runAsUser=0")
    if "runAsGroup" in context and context["runAsGroup"] == 0:
        found.append(f"non-root groups: {where} sets runAsGroup=0")
    return found


def _probe_and_hook_hosts(container: Mapping[str, Any]) -> Iterator[str]:
    handlers = [container.get(probe) for probe in ("livenessProbe", "readinessProbe",
                                                   "startupProbe")]
    lifecycle = container.get("lifecycle") or {}
    handlers += [lifecycle.get("postStart"), lifecycle.get("preStop")]
    for handler in handlers:
        for action in ("httpGet", "tcpSocket"):
            target = (handler or {}).get(action) or {}
            if "host" in target:
                yield str(target["host"])
