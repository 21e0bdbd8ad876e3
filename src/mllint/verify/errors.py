"""The one error ``--verify`` raises to its caller."""


class VerifyError(Exception):
    """The run could not be started or set up; the message is for the user (torch missing
    in the target interpreter, script or module not found, no CUDA, a bad ``--run``)."""


class VerifyInterrupted(VerifyError):
    """mllint got SIGTERM, SIGHUP or SIGINT during the run: the run was killed with all
    its descendants and its temporary files removed (the CLI exits 2)."""

    def __init__(self, signum: int) -> None:
        import signal

        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}: the run was killed "
                         "with every process it started, and its temporary files removed")
