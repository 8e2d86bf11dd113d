"""The runner <-> worker protocol: typed messages, one JSON object per line.

Runner -> worker (the worker's stdin):
  Start(case)         the case to run; a preset case comes with no model path yet
  Go()                measure now (sent at once for a model file, after Built for a preset);
                      end of input instead of Go means "do not measure": the worker exits quietly
Worker -> runner (the fd the runner passes; llama.cpp's own printing goes to the case log):
  Progress            stage "build" | "warmup" | "rep" | "profile", rep i of reps
  Built(model)        the preset's model file, built or found in the cache
  Info(info)          model facts, versions, skipped profilers, profiler notes (merged in order)
  Samples(samples)    raw samples, streamed as they are made (after each rep)
  Done() | Error(error)   the end: measured, or failed with a one-line reason
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from edgebench.records import Case, Sample


class _Line:
    """A message's line encoding: {"t": <type>, <fields>}."""

    t: ClassVar[str]

    def body(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def parse(cls, d: dict[str, Any]):
        return cls(**d)

    def to_json(self) -> str:
        """One line (no newline at the end)."""
        return json.dumps({"t": self.t, **self.body()})


@dataclass(frozen=True)
class Start(_Line):
    t: ClassVar[str] = "start"
    case: Case

    def body(self) -> dict[str, Any]:
        return {"case": self.case.to_dict()}

    @classmethod
    def parse(cls, d: dict[str, Any]) -> Start:
        return cls(Case.from_dict(d["case"]))


@dataclass(frozen=True)
class Go(_Line):
    t: ClassVar[str] = "go"


@dataclass(frozen=True)
class Progress(_Line):
    t: ClassVar[str] = "progress"
    stage: str  # "build" (rep/reps: bytes done/total) | "warmup" | "rep" | "profile"
    rep: int
    reps: int
    profiler: str = ""  # the profiler whose reps these are (stage "profile")


@dataclass(frozen=True)
class Built(_Line):
    t: ClassVar[str] = "built"
    model: str  # path of the built (or cached) model file


@dataclass(frozen=True)
class Info(_Line):
    t: ClassVar[str] = "info"
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Samples(_Line):
    t: ClassVar[str] = "samples"
    samples: tuple[Sample, ...]

    def body(self) -> dict[str, Any]:
        return {"samples": [s.to_dict() for s in self.samples]}

    @classmethod
    def parse(cls, d: dict[str, Any]) -> Samples:
        return cls(tuple(Sample(**s) for s in d["samples"]))


@dataclass(frozen=True)
class Done(_Line):
    t: ClassVar[str] = "done"


@dataclass(frozen=True)
class Error(_Line):
    t: ClassVar[str] = "error"
    error: str  # one line, clipped (clip())

    def __post_init__(self) -> None:
        object.__setattr__(self, "error", clip(self.error))


ERROR_CAP = 400  # characters of a runtime's text an error line quotes (a hostile tensor name can be 64 KiB)


def clip(text: str, cap: int = ERROR_CAP) -> str:
    """``text`` on one line (runs of whitespace and newlines folded), cut after ``cap`` characters
    with an ellipsis and the full length when longer. Every error string stored or printed goes
    through here; clipping a clipped line again leaves it as it is (the suffix has room)."""
    line = " ".join(str(text).split())
    return line if len(line) <= cap + 32 else f"{line[:cap]}... ({len(line)} chars)"


Message = Start | Go | Progress | Built | Info | Samples | Done | Error
_TYPES: dict[str, type[_Line]] = {c.t: c for c in (Start, Go, Progress, Built, Info, Samples, Done, Error)}


def from_json(line: str | bytes) -> Message:
    """The message a line holds; ValueError for a line that is not one."""
    try:
        d = json.loads(line)
        cls = _TYPES[d.pop("t")]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"not a worker protocol message: {line[:200]!r}") from e
    return cls.parse(d)
