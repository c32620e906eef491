"""The error type that the detector raises for problems a user can fix."""

from brgen_build.errors import BrgenError


class DetectorError(BrgenError):
    """Bad detector input: a missing weight file, an invalid dataset list, a mismatched checkpoint.

    The message names the file or value and the fix. The CLI prints it and exits with code 2.
    """
