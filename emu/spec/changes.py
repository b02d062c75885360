"""Changes to a running cluster's spec, validated like the files it was loaded from: ``kubectl apply`` and
``kubectl delete`` of single objects (Services: ``emu.spec.added``).

``apply_object(spec, document)`` returns the spec with the object of ``document`` created or changed: a new Pod
(placed like at load time, ``load_added_pod``), new labels for a running pod (its spec is immutable, as in
Kubernetes), or an object of an add-on's kind (a NetworkPolicy, a Namespace) created or replaced.
``delete_object(spec, kind, name, namespace)`` returns it without that object. Both raise ``SpecError`` with
located problems and change nothing when the change is refused; neither touches the kernel (the controller
re-plans and hands the difference to the live cluster).
"""

from dataclasses import replace
from typing import Any, List, Optional, Tuple

from emu import registry
from emu.spec.errors import Problem, SpecError
from emu.spec.load import load_added_pod, read_object_document
from emu.spec.model import ClusterSpec
from emu.spec.objects import read_pod
from emu.spec.reader import Reader, closest
from emu.spec.yamlsrc import Document

__all__ = ["apply_object", "delete_object", "POD_KINDS", "kind_of"]

#: How ``kubectl delete`` names the kind of a pod.
POD_KINDS = ("pod", "pods", "po")


def kind_of(name: str) -> Optional[str]:
    """The kind a ``kubectl delete`` word names (``pod``, ``networkpolicy``, ``netpol``, ``ns``...), or None."""
    word = name.lower()
    if word in POD_KINDS:
        return "Pod"
    short = {"netpol": "NetworkPolicy", "ns": "Namespace"}
    if word in short and short[word] in registry.addon_kinds():
        return short[word]
    for kind in registry.addon_kinds():
        singular = kind.lower()
        plural = singular[:-1] + "ies" if singular.endswith("y") else singular + "s"
        if word in (singular, plural):
            return kind
    return None


def apply_object(spec: ClusterSpec, document: Document) -> Tuple[ClusterSpec, str, List[Problem]]:
    """The spec with ``document``'s object applied, a line saying what happened (``kubectl apply``'s), and the
    warnings found. Raises SpecError (nothing changes) for an invalid object or a refused change. Services are
    the controller's to add (``emu.spec.added.load_added_service``, with the addresses the running plan gave)."""
    data = document.data
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind == "Pod":
        return _apply_pod(spec, document)
    if kind in registry.addon_kinds():
        return _apply_addon_object(spec, document, kind)
    what = f"kind {kind!r}" if kind else "an object without a kind"
    kinds = ", ".join(["Pod", "Service"] + sorted(registry.addon_kinds()))
    raise SpecError([Problem(document.file, document.line(("kind",)), "kind",
                             f"{what} cannot be applied to a running cluster",
                             f"{kinds} (Deployments are read when the cluster is built)")])


def _apply_pod(spec: ClusterSpec, document: Document) -> Tuple[ClusterSpec, str, List[Problem]]:
    meta = document.data.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    existing = next((p for p in spec.pods if p.name == name), None)
    if existing is None:
        pod = load_added_pod(document.data, spec, document)
        return replace(spec, pods=spec.pods + (pod,)), f'pod "{pod.name}" created', []
    problems: List[Problem] = []
    raws = read_pod(Reader(document, problems, set()))
    if any(p.severity == "error" for p in problems) or not raws:
        raise SpecError(problems or [Problem(document.file, document.line(()), "metadata", "no pod could be read")])
    new = raws[0].pod
    if new.namespace != existing.namespace:
        raise SpecError([Problem(document.file, document.line(("metadata", "namespace")), "metadata.namespace",
                                 f"pod {name!r} already exists in namespace {existing.namespace}",
                                 "pod names are unique in an emu cluster: pick another name")])
    unchanged = replace(new, labels=existing.labels, node=new.node or existing.node, file=existing.file,
                        line=existing.line)
    if unchanged != replace(existing, owner=new.owner):
        raise SpecError([Problem(document.file, document.line(("spec",)), "spec",
                                 f"pod {name!r} is running: only its labels can change",
                                 "delete it first to change the rest (a pod's spec is immutable)")])
    if new.labels == existing.labels:
        return spec, f'pod "{name}" unchanged', problems
    pods = tuple(replace(p, labels=new.labels) if p.name == name else p for p in spec.pods)
    return replace(spec, pods=pods), f'pod "{name}" labeled', problems


def _apply_addon_object(spec: ClusterSpec, document: Document, kind: str) -> Tuple[ClusterSpec, str, List[Problem]]:
    obj, problems = read_object_document(document)
    key = _key(obj)
    objects = list(spec.objects)
    old = next((i for i, (k, o) in enumerate(objects) if k == kind and _key(o) == key), None)
    if old is None:
        objects.append((kind, obj))
        verb = "created"
    elif _same(objects[old][1], obj):
        return spec, f'{kind.lower()} "{key}" unchanged', problems
    else:
        objects[old] = (kind, obj)
        verb = "configured"
    changed = replace(spec, objects=tuple(objects))
    reader = Reader(document, problems, set())
    for name, settings in changed.addons:
        if kind in registry.addon(name).KINDS:
            registry.addon_hook(name, "check_spec")(changed, settings, reader)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise SpecError(problems)
    return changed, f'{kind.lower()} "{key}" {verb}', problems


def delete_object(spec: ClusterSpec, kind: str, name: str, namespace: Optional[str] = None) -> Tuple[ClusterSpec, str]:
    """The spec without the object ``kind`` ``name`` (in ``namespace``, for namespaced kinds; needed only when
    the name is in several), and a line saying so. Raises SpecError when there is no such object."""
    if kind == "Pod":
        if not any(p.name == name for p in spec.pods):
            raise _not_found("pod", name, [p.name for p in spec.pods])
        return replace(spec, pods=tuple(p for p in spec.pods if p.name != name)), f'pod "{name}" deleted'
    candidates = [(i, o) for i, (k, o) in enumerate(spec.objects) if k == kind and getattr(o, "name", None) == name
                  and (namespace is None or getattr(o, "namespace", namespace) == namespace)]
    if not candidates:
        raise _not_found(kind.lower(), name, [getattr(o, "name", "") for k, o in spec.objects if k == kind])
    if len(candidates) > 1:
        spaces = ", ".join(sorted(getattr(o, "namespace", "") for _, o in candidates))
        raise SpecError([Problem("<delete>", None, "", f"{kind} {name!r} is in several namespaces ({spaces})",
                                 "name one with -n NAMESPACE")])
    index, obj = candidates[0]
    if kind == "Namespace":
        _refuse_busy_namespace(spec, name)
    objects = spec.objects[:index] + spec.objects[index + 1 :]
    return replace(spec, objects=objects), f'{kind.lower()} "{_key(obj)}" deleted'


def _refuse_busy_namespace(spec: ClusterSpec, name: str) -> None:
    """emu does not cascade: a namespace goes only once nothing of it is left."""
    held = [p.name for p in spec.pods if p.namespace == name]
    held += [o.key for k, o in spec.objects if k != "Namespace" and getattr(o, "namespace", None) == name]
    if held:
        raise SpecError([Problem("<delete>", None, "", f"namespace {name!r} still holds {', '.join(held)}",
                                 "delete those first (emu does not delete a namespace's objects with it)")])


def _not_found(what: str, name: str, known: List[str]) -> SpecError:
    close = closest(name, known)
    hint = f"did you mean {close!r}?" if close else ("one of " + ", ".join(sorted(set(known))) if known else "none")
    return SpecError([Problem("<delete>", None, "", f"no {what} named {name!r}", hint)])


def _key(obj: Any) -> str:
    return str(getattr(obj, "key", getattr(obj, "name", "")))


def _same(old: Any, new: Any) -> bool:
    """Equal but for where they were read from."""
    fields = ("file", "line")
    strip = {f: "" if f == "file" else 0 for f in fields if hasattr(old, f) and hasattr(new, f)}
    try:
        return bool(replace(old, **strip) == replace(new, **strip))
    except TypeError:
        return bool(old == new)

