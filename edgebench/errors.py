"""Errors that mean "the user asked for something impossible": the CLI turns them into exit code 2."""


class InputError(ValueError):
    """Bad input or usage, detected before anything is measured. The message is one line."""
