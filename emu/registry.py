"""The registry of feature modules: which flannel backends, kube-proxy modes and add-ons emu has.

The core asks this module, never a feature by name: the spec loader for the backend names and their fields, the
plan builder for a backend's or a proxy mode's plan fragment, the apply layer for their devices and daemons,
``emu doctor`` and the checks before a build for their kernel needs, ``emu trace`` for their hops. Adding a
feature is writing its module (the contract is in ``emu.features``) and naming it here.
"""

from types import ModuleType
from typing import Any, Callable, Dict, Iterable, List, Tuple

from emu.addons import dns, policy, standin
from emu.backends import host_gw, udp, vxlan
from emu.features import KernelNeed, Tool
from emu.proxy import iptables as proxy_iptables
from emu.proxy import nftables as proxy_nftables

#: flannel backend name (``network.backend.Type``) -> its module. The first is the default, as in flannel.
BACKENDS: Dict[str, ModuleType] = {m.NAME: m for m in (vxlan, host_gw, udp)}
DEFAULT_BACKEND = next(iter(BACKENDS))

#: kube-proxy mode (``network.kubeProxy.mode``) -> its module. The first is the default, as in kube-proxy.
PROXY_MODES: Dict[str, ModuleType] = {m.NAME: m for m in (proxy_iptables, proxy_nftables)}
DEFAULT_PROXY_MODE = next(iter(PROXY_MODES))


#: add-on name (a key under the cluster's ``addons``) -> its module, in the order their plan fragments are made.
ADDONS: Dict[str, ModuleType] = {m.NAME: m for m in (standin, dns, policy)}


class UnknownFeature(KeyError):
    """A backend or mode name the registry does not know (the message lists the known ones)."""

    def __str__(self) -> str:
        return str(self.args[0])


def backend(name: str) -> ModuleType:
    """The module of flannel backend ``name``."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise UnknownFeature(f"unknown backend {name!r} (one of {', '.join(BACKENDS)})") from None


def proxy_mode(name: str) -> ModuleType:
    """The module of kube-proxy mode ``name``."""
    try:
        return PROXY_MODES[name]
    except KeyError:
        raise UnknownFeature(f"unknown kube-proxy mode {name!r} (one of {', '.join(PROXY_MODES)})") from None


def addon(name: str) -> ModuleType:
    """The module of add-on ``name``."""
    try:
        return ADDONS[name]
    except KeyError:
        raise UnknownFeature(f"unknown add-on {name!r} (one of {', '.join(ADDONS) or 'none'})") from None


#: What an add-on's optional hooks do when the add-on does not define them.
_ADDON_DEFAULTS: Dict[str, Callable[..., Any]] = {
    "manifests": lambda settings, cluster: [],
    "check_spec": lambda spec, settings, reader: None,
    "plan": lambda spec, plan, settings: plan,
    "plan_text": lambda fragment: [],
    "trace_verdicts": lambda plan, src, dst, port, protocol: [],
    "start": lambda live, plan: None,
    "update": lambda live, old, new: None,
    "stop": lambda live: None,
}


def addon_hook(name: str, hook: str) -> Callable[..., Any]:
    """Add-on ``name``'s ``hook`` (manifests, check_spec, plan, plan_text, trace_verdicts, start, update, stop);
    a no-op when the add-on does not define it (see docs/architecture.md for what each is given and returns)."""
    return getattr(addon(name), hook, None) or _ADDON_DEFAULTS[hook]


def addon_kinds() -> Dict[str, ModuleType]:
    """Kubernetes kind -> the add-on that reads objects of it (``NetworkPolicy`` -> the policy add-on, ...)."""
    return {kind: module for module in ADDONS.values() for kind in module.KINDS}


def addon_api_versions() -> Dict[str, str]:
    """Kubernetes kind -> its apiVersion, for the kinds add-ons read."""
    return {kind: api for module in ADDONS.values() for kind, api in module.KINDS.items()}


def backend_of_device(kind: str) -> ModuleType:
    """The backend whose devices are of ``kind`` (``emu trace`` follows a packet into it)."""
    for module in BACKENDS.values():
        if kind in module.DEVICE_KINDS:
            return module
    raise UnknownFeature(f"no backend makes {kind!r} devices")


def device_kinds() -> Tuple[str, ...]:
    """The kinds of device the backends make (``emu trace`` hands a packet routed into one to its backend)."""
    return tuple(kind for module in BACKENDS.values() for kind in module.DEVICE_KINDS)


def trace_labels() -> Dict[str, str]:
    """Short labels of the trace hops the backends add (step -> label), for ``emu trace --diagram``."""
    return {step: label for module in BACKENDS.values() for step, label in module.TRACE_LABELS.items()}


def backend_options_fields() -> Dict[str, Tuple[str, List[str]]]:
    """Every backend option field: net-conf.json spelling -> (lowerCamelCase spelling, backends taking it)."""
    fields: Dict[str, Tuple[str, List[str]]] = {}
    for name, module in BACKENDS.items():
        for key, lower in module.OPTIONS.items():
            fields.setdefault(key, (lower, []))[1].append(name)
    return fields


def all_modules() -> Iterable[ModuleType]:
    """Every feature module, backends first."""
    yield from BACKENDS.values()
    yield from PROXY_MODES.values()
    yield from ADDONS.values()


def kernel_needs() -> List[Tuple[str, KernelNeed]]:
    """(feature name, need) for every kernel feature some module needs, in registry order."""
    return [(module.NAME, need) for module in all_modules() for need in module.KERNEL_NEEDS]


def tools() -> List[Tuple[str, Tool]]:
    """(feature name, tool) for every program some module runs."""
    return [(module.NAME, tool) for module in all_modules() for tool in getattr(module, "TOOLS", ())]
