"""Training progress as a reader of the output sees it: tqdm's bar on a terminal, one line per
epoch elsewhere (a log file, a CI job, ``nohup``), with the epoch's metrics, the time elapsed
and an estimate of the time left.

Both go to stderr, the stream tqdm draws on, so that stdout keeps the command's result alone.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal (a stream without ``isatty`` is not)."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def duration_text(seconds: float) -> str:
    """``45s``, ``12m05s``, ``3h07m`` (rounded down to whole seconds or minutes)."""
    whole = int(max(seconds, 0))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class EpochProgress:
    """How a run of epochs ``start_epoch + 1 .. epochs`` reports itself, if ``enabled``:
    :attr:`bar` (tqdm's per-step bar) when stderr is a terminal, else one :meth:`line` per
    finished epoch.

    The estimate of the time left is the mean wall time of the epochs finished in this process
    (training, evaluation and checkpoint included) times the epochs left; a resumed run
    estimates from its own epochs only. ``clock`` gives the wall time in seconds.
    """

    def __init__(
        self,
        epochs: int,
        start_epoch: int,
        enabled: bool,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.epochs = epochs
        self.start_epoch = start_epoch
        self.bar = enabled and is_terminal(sys.stderr)
        self.lines = enabled and not self.bar
        self.clock = clock
        self.began = clock()

    def line(self, record: dict[str, Any]) -> str | None:
        """Print (and return) the line of the finished epoch ``record`` (a history record:
        ``epoch``, ``train_loss``, ``train_acc``, ``test_top1``, optionally
        ``val_balanced_top1``) when lines are on; None otherwise."""
        if not self.lines:
            return None
        epoch = int(record["epoch"])
        elapsed = self.clock() - self.began
        done = epoch - self.start_epoch
        left = elapsed / done * (self.epochs - epoch) if done > 0 else 0.0
        parts = [
            f"epoch {epoch}/{self.epochs}",
            f"loss {record['train_loss']:.4f}",
            f"train acc {record['train_acc']:.2f}%",
        ]
        if record.get("test_top1") is not None:
            parts.append(f"test top-1 {record['test_top1']:.2f}%")
        if record.get("val_balanced_top1") is not None:
            parts.append(f"val balanced top-1 {record['val_balanced_top1']:.2f}%")
        parts += [f"elapsed {duration_text(elapsed)}", f"ETA {duration_text(left)}"]
        text = ", ".join(parts)
        print(text, file=sys.stderr, flush=True)
        return text
