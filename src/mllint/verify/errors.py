"""The one error ``--verify`` raises to its caller."""


class VerifyError(Exception):
    """The run could not be started or set up; the message is for the user (torch missing
    in the target interpreter, script or module not found, no CUDA, a bad ``--run``)."""
