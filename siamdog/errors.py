"""The one exception type for mistakes a user can fix (bad paths, labels, configs)."""


class SiamdogError(Exception):
    """A user-facing problem: the command line prints it on one line and exits with status 2."""
