"""Errors that reach the user as one clear line (no traceback), with the exit status they mean."""


class EmuError(Exception):
    """A failure explained to the user; ``exit_status`` 1 (runtime) or 2 (bad input)."""

    exit_status = 1


class EnvironmentProblem(EmuError):
    """This machine lacks something the command needs (root, a tool, a kernel feature)."""


class BuildError(EmuError):
    """A step of building the cluster failed; what was built has been undone."""

    def __init__(self, step: str, argv=None, output: str = "") -> None:  # type: ignore[no-untyped-def]
        self.step = step
        self.argv = list(argv or [])
        self.output = output.strip()
        text = f"build failed at: {step}"
        if self.argv:
            text += "\n  command: " + " ".join(self.argv)
        if self.output:
            text += "\n  output: " + self.output.replace("\n", "\n          ")
        super().__init__(text)


class InputError(EmuError):
    """Bad input that is not a topology problem (e.g. an experiment file without run())."""

    exit_status = 2
