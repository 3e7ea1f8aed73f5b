"""The pieces of a graph: nodes (a task to create with its payload and options), failure
policies, what a fan-out created, and a parent's outcome as its child reads it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from .options import TaskOptions

T = TypeVar("T")


@dataclass(frozen=True, init=False)
class Quorum:
    """Succeed as soon as enough succeeded: ``Quorum(0.9)`` (a fraction) or
    ``Quorum(min_successes=3)``; the rest are cancelled."""

    fraction: float | None
    min_successes: int | None

    def __init__(self, fraction: float | None = None, *, min_successes: int | None = None) -> None:
        if (fraction is None) == (min_successes is None):
            raise ValueError("give a Quorum either a fraction or min_successes, not both")
        if fraction is not None and not 0 < fraction <= 1:
            raise ValueError("a quorum's fraction is above 0 and at most 1")
        if min_successes is not None and min_successes < 1:
            raise ValueError("a quorum's min_successes is at least 1")
        object.__setattr__(self, "fraction", fraction)
        object.__setattr__(self, "min_successes", min_successes)

    def needed(self, total: int) -> int:
        """How many successes out of ``total`` reach the quorum."""
        if self.min_successes is not None:
            return self.min_successes
        assert self.fraction is not None
        exact = self.fraction * total
        return max(1, int(exact) + (0 if exact == int(exact) else 1))


Policy = Literal["fail_fast", "collect"] | Quorum
"""A failure policy: ``"fail_fast"`` (the first failure decides), ``"collect"`` (run
everything, see every success or error) or a ``Quorum``."""


def policy_json(policy: Policy) -> dict[str, Any]:
    """The API's form of a failure policy."""
    if isinstance(policy, Quorum):
        if policy.fraction is not None:
            return {"kind": "quorum", "fraction": policy.fraction}
        return {"kind": "quorum", "min_successes": policy.min_successes}
    if policy not in ("fail_fast", "collect"):
        raise ValueError(f"unknown failure policy {policy!r}: fail_fast, collect or Quorum(...)")
    return {"kind": policy}


@dataclass(frozen=True)
class Node(Generic[T]):
    """One task to create as part of a workflow or a fan-out. Make one with ``my_task.node(...)``
    (or ``my_task.each(items)`` for many); ``T`` is its handler's result type."""

    kind: str
    payload: Any
    options: TaskOptions = field(default_factory=TaskOptions)
    id: str | None = None
    depends_on: tuple[str, ...] = ()

    def named(self, id: str) -> Node[T]:
        """This node with an id (needed in a workflow graph; a fan-out names its own)."""
        return Node(self.kind, self.payload, self.options, id, self.depends_on)

    def after(self, *ids: str | Node[Any]) -> Node[T]:
        """This node, waiting for the given nodes (by id, or the nodes themselves)."""
        names = []
        for dep in ids:
            name = dep if isinstance(dep, str) else dep.id
            if not name:
                raise ValueError("a dependency needs an id: use .named('...') on it")
            names.append(name)
        return Node(self.kind, self.payload, self.options, self.id, (*self.depends_on, *names))

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": self.kind, "payload": self.payload}
        body.update(self.options.to_json(node=True))
        if self.id is not None:
            body["id"] = self.id
        if self.depends_on:
            body["depends_on"] = list(self.depends_on)
        return body


@dataclass(frozen=True)
class FanOut(Generic[T]):
    """What a fan-out created: its children run in parallel, then the join. Return it from the
    handler that fanned out (annotated ``-> FanOut[R]``, ``R`` being the join's result type): the
    join's result then stands in for the task's, so ``ref.result()`` gives an ``R``."""

    workflow_id: str
    join_id: str
    children: int

    def to_json(self) -> dict[str, Any]:
        return {
            "fan_out": {
                "workflow_id": self.workflow_id,
                "join_id": self.join_id,
                "children": self.children,
            }
        }


@dataclass(frozen=True)
class ParentResult:
    """A parent's outcome, as its child (say a fan-out's join) reads it with ``ctx.parents()``:
    ``result`` is the raw JSON, ``value(T)`` converts it."""

    node: str
    task_id: str
    state: str
    result: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.state == "succeeded"

    def value(self, tp: type[T]) -> T:
        """The parent's result converted to ``tp`` (a dataclass, a pydantic model, ...)."""
        from .convert import from_json

        value: T = from_json(self.result, tp, f"parents[{self.node}].result")
        return value


def as_nodes(nodes: Sequence[Node[Any]]) -> list[dict[str, Any]]:
    return [n.to_json() for n in nodes]
