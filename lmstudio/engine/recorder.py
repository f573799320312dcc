"""The run's history on disk, written as the trainer reports it.

The trainer trains and yields events; a ``RunRecorder`` subscribed to them keeps the run folder's record:
the settings and the tokenizer when a run starts, every StepMetrics and EvalMetrics in ``metrics.jsonl``,
every Sample in ``samples.jsonl``. Torch-free: checkpoints (weights, resume state) are the trainer's, since
only it holds the tensors. A write that fails raises ``OSError``; the trainer turns it into a disk failure.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lmstudio import run_history, runfolder
from lmstudio.events import EvalMetrics, Event, Sample, StepMetrics


class RunRecorder:
    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self._written: list[str] = []  # files a new run wrote while starting (removed if the start fails)

    def write_settings(self, config_json: str, write_tokenizer: Callable[[str], object]) -> None:
        """``config.json`` and ``tokenizer.json`` of a new run (``write_tokenizer(path)`` saves the tokenizer)."""
        runfolder.atomic_write_text(self.run_dir / runfolder.CONFIG_FILE, config_json)
        self._written.append(runfolder.CONFIG_FILE)
        runfolder.atomic_write(self.run_dir / runfolder.TOKENIZER_FILE, write_tokenizer)
        self._written.append(runfolder.TOKENIZER_FILE)

    def cut_history(self, step: int) -> list[str]:
        """A resumed run's history cut back to its checkpoint's ``step``; returns notices for the damaged lines
        that were skipped (torn by a crash or edited)."""
        skipped = run_history.truncate_history(self.run_dir, step)
        return [
            f"{name}: skipped {n} damaged line{'s' if n > 1 else ''} (torn by a crash or edited); "
            "the rest of the history is kept"
            for name, n in skipped.items()
            if n
        ]

    def undo_start(self, was_empty: bool) -> None:
        """A new run that could not start leaves nothing: the files it wrote and, if it made it, the folder."""
        for name in self._written:
            (self.run_dir / name).unlink(missing_ok=True)
        if was_empty:
            try:
                self.run_dir.rmdir()
            except OSError:
                pass  # not empty after all (someone else's files), or gone already

    def __call__(self, event: Event) -> None:
        if isinstance(event, (StepMetrics, EvalMetrics)):
            run_history.append_jsonl(self.run_dir / runfolder.METRICS_FILE, event.to_dict())
        elif isinstance(event, Sample):
            run_history.append_jsonl(self.run_dir / runfolder.SAMPLES_FILE, event.to_dict())
