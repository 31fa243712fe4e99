"""The one exception type users see: a readable message, no traceback."""


class UserError(Exception):
    """Bad input from the user (config, names, files, workdir).

    The CLI prints ``str(error)`` and exits with status 2; nothing on disk is changed
    by the code path that raises it.
    """
