"""The Spec layer: a cluster described in YAML becomes a validated, typed, fully resolved description.

``emu.spec.load.load(paths)`` reads the files; every problem is collected and reported at once as a
``SpecError`` carrying ``Problem`` records (file, line, field path, what is wrong, what would be right).
Loading never touches the kernel.
"""
