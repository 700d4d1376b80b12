"""The one interface every phase implements, a registry that keeps them in order, and a test
double that stands in for any phase (as httpx ships ``MockTransport`` next to its transports).

A phase does its work in ``run`` and returns a ``PhaseResult``; it signals anything else by
raising ``PhaseFailed`` or ``PhaseTimeout``. It never touches the state machine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from orchestrator.engine.context import Context


@dataclass(frozen=True)
class PhaseResult:
    summary: str = ""
    details: dict[str, Any] = field(default_factory=dict)


class Phase(Protocol):
    name: str

    def run(self, ctx: Context) -> PhaseResult: ...


@runtime_checkable
class Finishing(Protocol):
    """A phase that tidies up once the window has ended (``state`` is the final state)."""

    def finish(self, ctx: Context, state: str) -> None: ...


class FakePhase:
    """A phase whose work is ``handler``: for tests of the engine without databases."""

    def __init__(self, name: str, handler: Callable[[Context], PhaseResult]) -> None:
        self.name = name
        self._handler = handler

    def run(self, ctx: Context) -> PhaseResult:
        return self._handler(ctx)


class Registry:
    """Phases by name; a second phase under a name already taken is refused."""

    def __init__(self, phases: list[Phase] | None = None) -> None:
        self._phases: dict[str, Phase] = {}
        for phase in phases or []:
            self.register(phase)

    def register(self, phase: Phase) -> None:
        if phase.name in self._phases:
            raise ValueError(f"phase {phase.name!r} is registered twice")
        self._phases[phase.name] = phase

    def __getitem__(self, name: str) -> Phase:
        return self._phases[name]

    def finishing(self) -> list[Finishing]:
        return [p for p in self._phases.values() if isinstance(p, Finishing)]
