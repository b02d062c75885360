"""NetworkPolicy cases of the upstream e2e suite (test/e2e/network/netpol/network_policy.go), ported to emu's grid.

Each case is a list of steps (tests/netpol_steps.py) on the grid of tests/netpol_grid.py (namespaces x, y, z;
pods a, b, c; TCP and UDP on 80 and 81), its checks carrying upstream's expectation. Upstream's cases build only
the pods a case needs; here every case runs on the whole grid, so the expectations are restated for all nine
pods (a deny-all of namespace x isolates x/c too). The test of the engine (tests/test_policy_engine.py) holds the
engine to these expectations; the live test (tests/test_policy_live.py) holds the kernel to the engine on every
cell of every (port, protocol) after every step. Cases named "emu: ..." are emu's own; the DNS cases need
cluster DNS (the dns add-on).
"""

from typing import List

from netpol_steps import (  # noqa: F401  (the steps, re-exported for the tests)
    ALL_ALLOWED,
    METADATA_NAME,
    Apply,
    Case,
    Check,
    Delete,
    Expect,
    Resolve,
    Step,
    baseline_documents,
    case,
    expect,
    expected_cells,
    ips_of,
    label_namespace,
    label_pod,
    needs_dns,
    netpol,
    resolve,
)

T, F = True, False
NS_Y = f"namespaceSelector: {{matchLabels: {{{METADATA_NAME}: y}}}}"

# ---------------------------------------------------------------------------------------------- the cases

CASES: List[Case] = [
    case("should support a 'default-deny-ingress' policy",
         netpol("x", "deny-ingress", "podSelector: {}\npolicyTypes: [Ingress]"),
         Check(80, "TCP", expect(("*", "x/*", F)))),
    case("should support a 'default-deny-all' policy",
         netpol("x", "deny-all", "podSelector: {}\npolicyTypes: [Ingress, Egress]"),
         Check(80, "TCP", expect(("*", "x/*", F), ("x/*", "*", F)))),
    case("should enforce policy to allow traffic from pods within server namespace based on PodSelector",
         netpol("x", "x-a-allows-x-b", """\
                podSelector: {matchLabels: {pod: a}}
                ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]"""),
         Check(80, "TCP", expect(("*", "x/a", F), ("x/b", "x/a", T)))),
    case("should enforce policy to allow ingress traffic for a target",
         netpol("x", "deny-all", "podSelector: {}\npolicyTypes: [Ingress]"),
         netpol("x", "allow-all-to-a", """\
                podSelector: {matchLabels: {pod: a}}
                ingress: [{from: [{podSelector: {}, namespaceSelector: {}}]}]"""),
         Check(80, "TCP", expect(("*", "x/*", F), ("*", "x/a", T)))),
    case("should enforce policy to allow ingress traffic from pods in all namespaces",
         netpol("x", "allow-from-another-ns", """\
                podSelector: {matchLabels: {pod: a}}
                ingress: [{from: [{namespaceSelector: {matchLabels: {}}}]}]"""),
         Check(80, "TCP", ALL_ALLOWED)),
    case("should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector",
         netpol("x", "allow-client-a-via-ns-selector", f"""\
                podSelector: {{matchLabels: {{pod: a}}}}
                ingress: [{{from: [{{{NS_Y}}}]}}]"""),
         Check(80, "TCP", expect(("x/*", "x/a", F), ("z/*", "x/a", F)))),
    case("should enforce policy based on PodSelector with MatchExpressions",
         netpol("x", "x-a-allows-x-b", """\
                podSelector: {matchLabels: {pod: a}}
                ingress:
                - from:
                  - podSelector: {matchExpressions: [{key: pod, operator: In, values: [b]}]}"""),
         Check(80, "TCP", expect(("*", "x/a", F), ("x/b", "x/a", T)))),
    case("should enforce policy based on NamespaceSelector with MatchExpressions",
         netpol("x", "allow-ns-y-match-selector", f"""\
                podSelector: {{matchLabels: {{pod: a}}}}
                ingress:
                - from:
                  - namespaceSelector: {{matchExpressions: [{{key: {METADATA_NAME}, operator: In, values: [y]}}]}}"""),
         Check(80, "TCP", expect(("x/*", "x/a", F), ("z/*", "x/a", F)))),
    case("should enforce policy based on PodSelector or NamespaceSelector",
         netpol("x", "allow-ns-y-match-selector", f"""\
                podSelector: {{matchLabels: {{pod: a}}}}
                ingress:
                - from:
                  - namespaceSelector: {{matchExpressions: [{{key: {METADATA_NAME}, operator: NotIn, values: [x]}}]}}
                  - podSelector: {{matchLabels: {{pod: b}}}}"""),
         Check(80, "TCP", expect(("x/c", "x/a", F)))),
    case("should enforce policy based on PodSelector and NamespaceSelector",
         netpol("x", "allow-ns-y-podselector-and-nsselector", f"""\
                podSelector: {{matchLabels: {{pod: a}}}}
                ingress:
                - from:
                  - namespaceSelector: {{matchExpressions: [{{key: {METADATA_NAME}, operator: NotIn, values: [x]}}]}}
                    podSelector: {{matchLabels: {{pod: b}}}}"""),
         Check(80, "TCP", expect(("*", "x/a", F), ("y/b", "x/a", T), ("z/b", "x/a", T)))),
    case("should enforce policy based on Multiple PodSelectors and NamespaceSelectors",
         netpol("x", "allow-ns-y-z-pod-b-c", f"""\
                podSelector: {{matchLabels: {{pod: a}}}}
                ingress:
                - from:
                  - namespaceSelector: {{matchExpressions: [{{key: {METADATA_NAME}, operator: NotIn, values: [x]}}]}}
                    podSelector: {{matchExpressions: [{{key: pod, operator: In, values: [b, c]}}]}}"""),
         Check(80, "TCP", expect(("x/*", "x/a", F), ("*/a", "x/a", F)))),
    case("should enforce policy based on any PodSelectors",
         netpol("x", "allow-ns-x-pod-b-c", """\
                podSelector: {matchLabels: {pod: a}}
                ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}, {podSelector: {matchLabels: {pod: c}}}]}]"""),
         Check(80, "TCP", expect(("*", "x/a", F), ("x/b", "x/a", T), ("x/c", "x/a", T)))),
    case("should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and "
         "NamespaceSelector",
         netpol("x", "allow-ns-y-pod-a-via-namespace-pod-selector", f"""\
                podSelector: {{matchLabels: {{pod: a}}}}
                ingress: [{{from: [{{{NS_Y}, podSelector: {{matchLabels: {{pod: a}}}}}}]}}]"""),
         Check(80, "TCP", expect(("*", "x/a", F), ("y/a", "x/a", T)))),
    case("should enforce policy based on Ports",
         netpol("x", "allow-client-a-via-ns-selector", f"""\
                podSelector: {{matchLabels: {{pod: a}}}}
                ingress: [{{from: [{{{NS_Y}}}], ports: [{{port: 81, protocol: TCP}}]}}]"""),
         Check(81, "TCP", expect(("x/*", "x/a", F), ("y/*", "x/a", T), ("z/*", "x/a", F))),
         Check(80, "TCP", expect(("*", "x/a", F)))),
    case("should enforce multiple, stacked policies with overlapping podSelectors",
         netpol("x", "allow-client-a-via-ns-selector", f"""\
                podSelector: {{matchLabels: {{pod: a}}}}
                ingress: [{{from: [{{{NS_Y}}}], ports: [{{port: 81, protocol: TCP}}]}}]"""),
         Check(81, "TCP", expect(("x/*", "x/a", F), ("y/*", "x/a", T), ("z/*", "x/a", F))),
         Check(80, "TCP", expect(("*", "x/a", F))),
         netpol("x", "allow-client-a-via-ns-selector-80", f"""\
                podSelector: {{matchLabels: {{pod: a}}}}
                ingress: [{{from: [{{{NS_Y}}}], ports: [{{port: 80, protocol: TCP}}]}}]"""),
         Check(80, "TCP", expect(("x/*", "x/a", F), ("y/*", "x/a", T), ("z/*", "x/a", F)))),
    case("should support allow-all policy",
         netpol("x", "allow-all", "podSelector: {}\ningress: [{}]"),
         Check(80, "TCP", ALL_ALLOWED), Check(81, "TCP", ALL_ALLOWED)),
    case("should allow ingress access on one named port",
         netpol("x", "allow-all", "podSelector: {}\ningress: [{ports: [{port: serve-81-tcp}]}]"),
         Check(81, "TCP", ALL_ALLOWED), Check(80, "TCP", expect(("*", "x/*", F)))),
    case("should allow ingress access from namespace on one named port",
         netpol("x", "allow-client-a-via-ns-selector-80", f"""\
                podSelector: {{matchLabels: {{pod: a}}}}
                ingress: [{{from: [{{{NS_Y}}}], ports: [{{port: serve-80-tcp, protocol: TCP}}]}}]"""),
         Check(80, "TCP", expect(("x/*", "x/a", F), ("z/*", "x/a", F))),
         Check(81, "TCP", expect(("*", "x/a", F)))),
    case("should allow egress access on one named port",
         netpol("x", "allow-egress", "podSelector: {}\npolicyTypes: [Egress]\n"
                "egress: [{ports: [{port: serve-80-tcp}]}]"),
         Check(80, "TCP", ALL_ALLOWED), Check(81, "TCP", expect(("x/*", "*", F)))),
    case("should enforce updated policy",
         netpol("x", "allow-all-mutate-to-deny-all", "podSelector: {}\ningress: [{}]"),
         Check(81, "TCP", ALL_ALLOWED),
         netpol("x", "allow-all-mutate-to-deny-all", "podSelector: {}\npolicyTypes: [Ingress]\ningress: []"),
         Check(81, "TCP", expect(("*", "x/*", F)))),
    case("should allow ingress access from updated namespace",
         netpol("x", "allow-client-a-via-ns-selector", """\
                podSelector: {matchLabels: {pod: a}}
                ingress: [{from: [{namespaceSelector: {matchLabels: {ns2: updated}}}]}]"""),
         Check(80, "TCP", expect(("*", "x/a", F))),
         label_namespace("y", {"ns": "y", "ns2": "updated"}),
         Check(80, "TCP", expect(("*", "x/a", F), ("y/*", "*", T)))),
    case("should allow ingress access from updated pod",
         netpol("x", "allow-client-a-via-pod-selector", """\
                podSelector: {matchLabels: {pod: a}}
                ingress: [{from: [{podSelector: {matchLabels: {pod: b, pod2: updated}}}]}]"""),
         Check(80, "TCP", expect(("*", "x/a", F))),
         label_pod("x/b", {"pod": "b", "pod2": "updated"}),
         Check(80, "TCP", expect(("*", "x/a", F), ("x/b", "x/a", T)))),
    case("should deny ingress from pods on other namespaces",
         netpol("x", "deny-empty-policy", "podSelector: {}\ningress: [{from: [{podSelector: {matchLabels: {}}}]}]"),
         Check(80, "TCP", expect(("y/*", "x/*", F), ("z/*", "x/*", F)))),
    case("should deny ingress access to updated pod",
         netpol("x", "deny-ingress-via-label-selector",
                "podSelector: {matchLabels: {target: isolated}}\npolicyTypes: [Ingress]"),
         Check(80, "TCP", ALL_ALLOWED),
         label_pod("x/a", {"pod": "a", "target": "isolated"}),
         Check(80, "TCP", expect(("*", "x/a", F)))),
    case("should deny egress from pods based on PodSelector",
         netpol("x", "deny-egress-pod-a", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress]"),
         Check(80, "TCP", expect(("x/a", "*", F)))),
    case("should deny egress from all pods in a namespace",
         netpol("x", "deny-egress-ns-x", "podSelector: {}\npolicyTypes: [Egress]"),
         Check(80, "TCP", expect(("x/*", "*", F)))),
    case("should work with Ingress, Egress specified together",
         netpol("x", "allow-client-a-via-pod-selector", """\
                podSelector: {matchLabels: {pod: a}}
                policyTypes: [Egress, Ingress]
                ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]
                egress: [{ports: [{port: 80}]}]"""),
         Check(80, "TCP", expect(("*", "x/a", F), ("x/b", "x/a", T))),
         Check(81, "TCP", expect(("*", "x/a", F), ("x/a", "*", F), ("x/b", "x/a", T)))),
    case("should support denying of egress traffic on the client side (even if the server explicitly allows this "
         "traffic)",
         netpol("x", "allow-to-ns-y-pod-a", f"""\
                podSelector: {{matchLabels: {{pod: a}}}}
                policyTypes: [Egress]
                egress: [{{to: [{{{NS_Y}, podSelector: {{matchLabels: {{pod: a}}}}}}]}}]"""),
         netpol("y", "allow-from-xa-on-ya-match-selector", f"""\
                podSelector: {{matchLabels: {{pod: a}}}}
                ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{{METADATA_NAME}: x}}}},
                                   podSelector: {{matchLabels: {{pod: a}}}}}}]}}]"""),
         netpol("y", "allow-from-xa-on-yb-match-selector", f"""\
                podSelector: {{matchLabels: {{pod: b}}}}
                ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{{METADATA_NAME}: x}}}},
                                   podSelector: {{matchLabels: {{pod: a}}}}}}]}}]"""),
         Check(80, "TCP", expect(("x/a", "*", F), ("*", "y/a", F), ("x/a", "y/a", T), ("*", "y/b", F)))),
    case("should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and "
         "NamespaceSelector",
         netpol("x", "allow-to-ns-y-pod-a", f"""\
                podSelector: {{matchLabels: {{pod: a}}}}
                policyTypes: [Egress]
                egress: [{{to: [{{{NS_Y}, podSelector: {{matchLabels: {{pod: a}}}}}}]}}]"""),
         Check(80, "TCP", expect(("x/a", "*", F), ("x/a", "y/a", T)))),
    case("should enforce ingress policy allowing any port traffic to a server on a specific protocol",
         netpol("x", "allow-ingress-by-proto", """\
                podSelector: {matchLabels: {pod: a}}
                ingress: [{ports: [{protocol: TCP}]}]"""),
         Check(80, "TCP", ALL_ALLOWED), Check(80, "UDP", expect(("*", "x/a", F)))),
    case("should enforce multiple ingress policies with ingress allow-all policy taking precedence",
         netpol("x", "allow-ingress-port-80", "podSelector: {}\ningress: [{ports: [{port: 80}]}]"),
         Check(81, "TCP", expect(("*", "x/*", F))),
         netpol("x", "allow-ingress", "podSelector: {}\ningress: [{}]"),
         Check(81, "TCP", ALL_ALLOWED)),
    case("should enforce multiple egress policies with egress allow-all policy taking precedence",
         netpol("x", "allow-egress-port-80", "podSelector: {}\npolicyTypes: [Egress]\negress: [{ports: [{port: 80}]}]"),
         Check(81, "TCP", expect(("x/*", "*", F))),
         netpol("x", "allow-egress", "podSelector: {}\npolicyTypes: [Egress]\negress: [{}]"),
         Check(81, "TCP", ALL_ALLOWED)),
    case("should stop enforcing policies after they are deleted",
         netpol("x", "deny-all", "podSelector: {}\npolicyTypes: [Ingress, Egress]"),
         Check(80, "TCP", expect(("x/*", "*", F), ("*", "x/*", F))),
         Delete("networkpolicy", "deny-all", "x"),
         Check(80, "TCP", ALL_ALLOWED)),
    case("should allow egress access to server in CIDR block",
         netpol("x", "allow-client-a-via-cidr-egress-rule", """\
                podSelector: {matchLabels: {pod: a}}
                policyTypes: [Egress]
                egress: [{to: [{ipBlock: {cidr: IP(y/b)/32}}]}]"""),
         Check(80, "TCP", expect(("x/a", "*", F), ("x/a", "y/b", T)))),
    case("should enforce except clause while egress access to server in CIDR block",
         netpol("x", "allow-client-a-via-cidr-egress-rule", """\
                podSelector: {matchLabels: {pod: a}}
                policyTypes: [Egress]
                egress: [{to: [{ipBlock: {cidr: CIDR4(x/b), except: [IP(x/b)/32]}}]}]"""),
         Check(80, "TCP", expect(("x/a", "x/b", F)))),
    case("should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed",
         netpol("x", "allow-client-a-via-cidr-egress-rule", """\
                podSelector: {matchLabels: {pod: a}}
                policyTypes: [Egress]
                egress: [{to: [{ipBlock: {cidr: CIDR4(x/b), except: [IP(x/b)/32]}}]}]"""),
         Check(80, "TCP", expect(("x/a", "x/b", F))),
         netpol("x", "allow-client-a-via-cidr-egress-rule", """\
                podSelector: {matchLabels: {pod: a}}
                policyTypes: [Egress]
                egress: [{to: [{ipBlock: {cidr: IP(x/b)/32}}]}]"""),
         Check(80, "TCP", expect(("x/a", "*", F), ("x/a", "x/b", T)))),
    case("should enforce policies to check ingress and egress policies can be controlled independently based on "
         "PodSelector",
         netpol("x", "allow-egress-for-target", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress]\n"
                "egress: [{}]"),
         Check(80, "TCP", ALL_ALLOWED),
         netpol("x", "deny-ingress-via-label-selector", "podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]"),
         Check(80, "TCP", expect(("*", "x/a", F)))),
    case("should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP",
         netpol("x", "deny-ingress", "podSelector: {}\npolicyTypes: [Ingress]"),
         netpol("x", "allow-only-sctp-ingress-on-port-81", """\
                podSelector: {matchLabels: {pod: a}}
                ingress: [{ports: [{port: 81, protocol: SCTP}]}]"""),
         Check(81, "TCP", expect(("*", "x/*", F)))),
    case("should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin doesn't "
         "support SCTP",
         netpol("x", "allow-only-sctp-ingress-on-port-80", """\
                podSelector: {matchLabels: {pod: a}}
                ingress: [{ports: [{port: 80, protocol: SCTP}]}]"""),
         Check(81, "TCP", expect(("*", "x/a", F)))),
    case("should not allow access by TCP when a policy specifies only UDP",
         netpol("x", "allow-only-udp-ingress-on-port-81", """\
                podSelector: {matchLabels: {pod: a}}
                ingress: [{ports: [{port: 81, protocol: UDP}]}]"""),
         Check(81, "TCP", expect(("*", "x/a", F))), Check(81, "UDP", ALL_ALLOWED)),
    case("should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default ns label",
         netpol("x", "allow-client-a-via-ns-selector-for-immutable-ns-label", f"""\
                podSelector: {{matchLabels: {{pod: a}}}}
                ingress: [{{from: [{{{NS_Y}}}]}}]"""),
         Check(80, "TCP", expect(("x/*", "x/a", F), ("z/*", "x/a", F)))),
    case("should enforce policy based on NamespaceSelector with MatchExpressions using default ns label",
         netpol("x", "allow-ns-y-match-selector-for-immutable-ns-label", f"""\
                podSelector: {{matchLabels: {{pod: a}}}}
                policyTypes: [Egress]
                egress:
                - to:
                  - namespaceSelector: {{matchExpressions: [{{key: {METADATA_NAME}, operator: NotIn, values: [y]}}]}}"""),
         Check(80, "TCP", expect(("x/a", "y/*", F)))),
    # -------------------------------------------------------------------------- upstream's UDP cases
    case("UDP: should support a 'default-deny-ingress' policy",
         netpol("x", "deny-all", "podSelector: {}\npolicyTypes: [Ingress]\ningress: []"),
         Check(80, "UDP", expect(("*", "x/*", F)))),
    case("UDP: should enforce policy based on Ports",
         netpol("x", "allow-ingress-on-port-81-ns-x", f"""\
                podSelector: {{matchLabels: {{pod: a}}}}
                ingress: [{{from: [{{{NS_Y}}}], ports: [{{port: 81, protocol: UDP}}]}}]"""),
         Check(81, "UDP", expect(("x/*", "x/a", F), ("z/*", "x/a", F))),
         Check(80, "UDP", expect(("*", "x/a", F)))),
    case("UDP: should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector "
         "and NamespaceSelector",
         netpol("x", "allow-ns-y-pod-a-via-namespace-pod-selector", f"""\
                podSelector: {{matchLabels: {{pod: a}}}}
                ingress: [{{from: [{{{NS_Y}, podSelector: {{matchLabels: {{pod: a}}}}}}]}}]"""),
         Check(80, "UDP", expect(("*", "x/a", F), ("y/a", "x/a", T)))),
    # ------------------------------------------------------------------ egress and cluster DNS
    case("egress on one named port, with DNS allowed (as upstream's earlier versions of the case)",
         netpol("x", "allow-egress", """\
                podSelector: {}
                policyTypes: [Egress]
                egress: [{ports: [{port: serve-80-tcp}, {protocol: UDP, port: 53}]}]"""),
         Resolve("x/a", True),
         Check(80, "TCP", ALL_ALLOWED), Check(81, "TCP", expect(("x/*", "*", F)))),
    case("emu: DNS: an egress deny-all denies cluster DNS too",
         netpol("x", "deny-egress", "podSelector: {}\npolicyTypes: [Egress]"),
         Resolve("x/a", False), Resolve("y/a", True),
         Check(80, "UDP", expect(("x/*", "*", F)))),
    case("emu: DNS: egress allowed to the DNS pods on port 53, and nothing else",
         netpol("x", "deny-egress", "podSelector: {}\npolicyTypes: [Egress]"),
         netpol("x", "allow-dns", f"""\
                podSelector: {{}}
                policyTypes: [Egress]
                egress:
                - to: [{{namespaceSelector: {{matchLabels: {{{METADATA_NAME}: kube-system}}}},
                         podSelector: {{matchLabels: {{k8s-app: kube-dns}}}}}}]
                  ports: [{{protocol: UDP, port: 53}}, {{protocol: TCP, port: 53}}]"""),
         Resolve("x/b", True),
         Check(80, "TCP", expect(("x/*", "*", F)))),
    case("emu: DNS: an ipBlock of the kube-dns ClusterIP allows nothing (policies see the DNS pod)",
         netpol("x", "deny-egress", "podSelector: {}\npolicyTypes: [Egress]"),
         netpol("x", "allow-dns-by-cluster-ip", """\
                podSelector: {}
                policyTypes: [Egress]
                egress: [{to: [{ipBlock: {cidr: 10.96.0.10/32}}], ports: [{protocol: UDP, port: 53}]}]"""),
         Resolve("x/c", False)),
    # ----------------------------------------------------------------------------- emu's own cases
    case("emu: ingress on a port range (endPort) from one namespace",
         netpol("x", "allow-range-from-y", f"""\
                podSelector: {{matchLabels: {{pod: a}}}}
                ingress: [{{from: [{{{NS_Y}}}], ports: [{{port: 79, endPort: 80}}]}}]"""),
         Check(80, "TCP", expect(("x/*", "x/a", F), ("z/*", "x/a", F))),
         Check(81, "TCP", expect(("*", "x/a", F)))),
    case("emu: egress on a UDP port range (endPort), TCP and other ports denied",
         netpol("x", "allow-udp-range", """\
                podSelector: {}
                policyTypes: [Egress]
                egress: [{ports: [{protocol: UDP, port: 81, endPort: 90}]}]"""),
         Check(81, "UDP", ALL_ALLOWED), Check(80, "UDP", expect(("x/*", "*", F))),
         Check(81, "TCP", expect(("x/*", "*", F)))),
    case("emu: two policies are a union: a CIDR with an except, and the excepted address",
         netpol("x", "allow-cidr-except-b", """\
                podSelector: {matchLabels: {pod: a}}
                policyTypes: [Egress]
                egress: [{to: [{ipBlock: {cidr: CIDR4(x/b), except: [IP(x/b)/32]}}]}]"""),
         netpol("x", "allow-b", """\
                podSelector: {matchLabels: {pod: a}}
                policyTypes: [Egress]
                egress: [{to: [{ipBlock: {cidr: IP(x/b)/32}}]}]"""),
         Check(80, "TCP", ALL_ALLOWED)),
    case("emu: ingress from a CIDR with an except, and 0.0.0.0/0 with the pod network excepted",
         netpol("y", "allow-pod-network-but-x-a", """\
                podSelector: {}
                ingress: [{from: [{ipBlock: {cidr: 10.244.0.0/16, except: [IP(x/a)/32]}}]}]"""),
         Check(80, "TCP", expect(("x/a", "y/*", F))),
         netpol("z", "allow-outside-only", """\
                podSelector: {}
                ingress: [{from: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.244.0.0/16]}}]}]"""),
         Check(80, "TCP", expect(("x/a", "y/*", F), ("*", "z/*", F)))),
    case("emu: a namespace label added then removed",
         netpol("x", "allow-from-team-blue", """\
                podSelector: {}
                ingress: [{from: [{namespaceSelector: {matchLabels: {team: blue}}}]}]"""),
         Check(80, "TCP", expect(("*", "x/*", F))),
         label_namespace("z", {"ns": "z", "team": "blue"}),
         Check(80, "TCP", expect(("*", "x/*", F), ("z/*", "x/*", T))),
         label_namespace("z", {"ns": "z"}),
         Check(80, "TCP", expect(("*", "x/*", F)))),
    case("emu: a pod relabelled out of a policy's podSelector is open again",
         netpol("y", "deny-role-db", "podSelector: {matchExpressions: [{key: role, operator: Exists}]}\n"
                "policyTypes: [Ingress, Egress]"),
         label_pod("y/c", {"pod": "c", "role": "db"}),
         Check(81, "UDP", expect(("*", "y/c", F), ("y/c", "*", F))),
         label_pod("y/c", {"pod": "c"}),
         Check(81, "UDP", ALL_ALLOWED)),
    case("emu: DoesNotExist and NotIn select pods without the label too",
         netpol("z", "isolate-unlabelled", """\
                podSelector: {matchExpressions: [{key: tier, operator: DoesNotExist}]}
                ingress:
                - from: [{namespaceSelector: {}, podSelector: {matchExpressions: [{key: pod, operator: NotIn, values: [a]}]}}]"""),
         label_pod("z/b", {"pod": "b", "tier": "web"}),
         Check(80, "TCP", expect(("*/a", "z/a", F), ("*/a", "z/c", F)))),
]
