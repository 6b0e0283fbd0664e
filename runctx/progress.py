"""How long work reports how far it is."""

from collections.abc import Callable

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total): called as work advances; `stage` names what is being counted."""


def no_progress(stage: str, done: int, total: int) -> None:
    """Discard a progress report."""
