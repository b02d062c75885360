"""``emu trace``: a packet's path through the cluster, hop by hop, predicted from the plan and checked live.

- ``emu.trace.predict`` (pure, no root): the predicted hops of a packet between pods, nodes and Services, from a
  Plan alone: longest-prefix routing, the bridge, flannel's backends, kube-proxy's DNAT. Its parts:
  ``model`` (the records), ``routing`` (tables and lookup), ``walk`` (the packet's walk, one method per device
  kind).
- ``emu.trace.verify`` (root, a live cluster): sends real packets and marks each hop seen or NOT SEEN from
  kernel evidence (device counters, tcpdump, iptables counters, live routes), and says why the first hop not
  seen was not reached. Its parts: ``traffic`` (listener, clients), ``probe`` (the client and listener
  programs, run with ``python3 -m``), ``capture`` (tcpdumps), ``evidence`` (counters, live routes), ``judge``
  (seen or not), ``diagnose`` (why not), ``result`` (``TraceResult`` and its JSON).
- ``emu.trace.render``: the numbered text list and the matplotlib diagram.
- ``emu.trace.command``: ``run_trace``, the ``emu trace`` verb's work, and ``trace_line``, the interactive CLI's
  ``trace`` command.
- ``emu.trace.dns``: the DNS exchange shown first when the destination is a Service *name* and the source pod
  resolves through cluster DNS (the query to kube-dns, the DNS pod, the answer).

The package itself imports nothing, so that the programs of ``emu.trace.probe`` start light in a pod.
"""
