"""Errors that reach the user as a message and an exit code, never as a traceback."""


class BrgenError(Exception):
    """A problem the user can fix: bad input, a missing file, a recipe mistake.

    The message names the file or value and the fix. The CLI prints it and exits with code 2.
    """


class RecipeError(BrgenError):
    """An invalid recipe: the message names the recipe file and the key."""
