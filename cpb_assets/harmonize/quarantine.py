"""Quarantine: every dropped sample, cell or gene is recorded with its reason."""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

QUARANTINE_COLUMNS = ["dataset", "file", "record_id", "level", "reason", "n"]


@dataclass
class Quarantine:
    """Collects dropped records of one dataset partition.

    ``level`` says what was dropped (``sample``, ``cell``, ``gene``,
    ``compound``); ``n`` how many units the row stands for (one row may
    summarize many cells failing the same rule on one plate).
    """

    dataset: str
    rows: list[dict] = field(default_factory=list)

    def add(self, file: str, record_ids, reason: str, level: str = "sample") -> None:
        for rid in record_ids:
            self.rows.append({"dataset": self.dataset, "file": str(file), "record_id": str(rid),
                              "level": level, "reason": reason, "n": 1})

    def add_count(self, file: str, record_id: str, reason: str, n: int, level: str = "cell") -> None:
        if n:
            self.rows.append({"dataset": self.dataset, "file": str(file), "record_id": str(record_id),
                              "level": level, "reason": reason, "n": int(n)})

    def to_frame(self) -> pd.DataFrame:
        df = pd.DataFrame(self.rows, columns=QUARANTINE_COLUMNS)
        df["n"] = df["n"].astype("int64")
        return df

    def summary(self) -> dict[str, int]:
        df = self.to_frame()
        return {str(k): int(v) for k, v in df.groupby("reason")["n"].sum().items()}
