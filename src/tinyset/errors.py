"""One exception type whose message is a single line that names the problem; the CLI prints it."""


class TinysetError(Exception):
    """A user-facing error: bad input, missing file, corrupt artifact. Message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
