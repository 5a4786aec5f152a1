"""What a run prints: one timestamped line per table outcome with a running total, and a summary."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from .common import Out, Task, iso, pretty_bytes, pretty_seconds

COPIED, ALREADY, FAILED, RELEASED, LOST = "copied", "already", "failed", "released", "lost"


@dataclass
class Outcome:
    task_id: int
    shard: str
    node: str
    kind: str
    seconds: float
    size_bytes: int
    attempt: int
    detail: str | None = None


class Report:
    """Thread-safe: every sync thread reports through it."""

    def __init__(self, out: Out, total_tasks: int, total_weight: int, max_attempts: int):
        self.out = out
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.total_tasks = max(total_tasks, 1)
        self.total_weight = max(total_weight, 1)
        self.max_attempts = max_attempts
        self.done_tasks = self.done_bytes = self.done_weight = 0
        self.failed_attempts = 0
        self.outcomes: dict[int, Outcome] = {}  # the last outcome of each task

    def say(self, line: str, error: bool = False) -> None:
        self.out.say(line, error)

    def _total(self) -> str:
        return (f"{self.done_tasks}/{self.total_tasks} tasks, {pretty_bytes(self.done_bytes)}, "
                f"{100 * self.done_weight / self.total_weight:.0f}% of the priority weight")

    def done(self, task: Task, seconds: float, copied: bool) -> None:
        with self.lock:
            self.done_tasks += 1
            self.done_weight += task.priority_weight
            if copied:
                self.done_bytes += task.size_bytes
            self.outcomes[task.task_id] = Outcome(task.task_id, task.shard, task.node.name,
                                                  COPIED if copied else ALREADY, seconds,
                                                  task.size_bytes if copied else 0, task.attempts + 1)
            lane = ", express" if task.prefetch else ""
            if copied:
                line = (f"ready    {task.shard} -> {task.node.name}, {pretty_bytes(task.size_bytes)} in "
                        f"{pretty_seconds(seconds)}, weight {task.priority_weight}{lane}")
            else:
                line = (f"already  {task.shard} already on {task.node.name} (in sync there, nothing copied), "
                        f"weight {task.priority_weight}")
            self.out.say(f"{line} | {self._total()}")

    def failed(self, task: Task, seconds: float, detail: str) -> None:
        attempt = task.attempts + 1
        last = attempt >= self.max_attempts
        with self.lock:
            self.failed_attempts += 1
            self.outcomes[task.task_id] = Outcome(task.task_id, task.shard, task.node.name, FAILED, seconds, 0,
                                                  attempt, detail)
            after = "no attempts left: failed" if last else "queued again"
            self.out.say(f"FAILED   {task.shard} -> {task.node.name}, attempt {attempt} of {self.max_attempts}, "
                         f"after {pretty_seconds(seconds)} ({after}): {detail}")

    def released(self, task: Task, seconds: float, how: str) -> None:
        with self.lock:
            self.outcomes[task.task_id] = Outcome(task.task_id, task.shard, task.node.name, RELEASED, seconds, 0,
                                                  task.attempts + 1, how)
            self.out.say(f"released {task.shard} -> {task.node.name} ({how}); the task is queued again")

    def lost(self, task: Task, seconds: float, why: str) -> None:
        with self.lock:
            self.outcomes[task.task_id] = Outcome(task.task_id, task.shard, task.node.name, LOST, seconds, 0,
                                                  task.attempts + 1, why)
            self.out.say(f"lost     {task.shard} -> {task.node.name}: {why}", error=True)

    def counts(self) -> dict[str, int]:
        with self.lock:
            counts = {k: 0 for k in (COPIED, ALREADY, FAILED, RELEASED, LOST)}
            for outcome in self.outcomes.values():
                counts[outcome.kind] += 1
            return counts

    def summary(self, still_failed: list[tuple], held: list[tuple], skipped_nodes: list[str],
                status: int, why: str, hints: dict[int, str]) -> None:
        wall = time.monotonic() - self.started
        with self.lock:
            outcomes = sorted(self.outcomes.values(), key=lambda o: o.task_id)
        counts = self.counts()
        done = counts[COPIED] + counts[ALREADY]
        copied_bytes = sum(o.size_bytes for o in outcomes if o.kind == COPIED)
        say = self.out.say
        say(f"summary: {done} done ({counts[COPIED]} copied, {counts[ALREADY]} already on their node), "
            f"{counts[FAILED]} failed, {counts[RELEASED]} released, {counts[LOST]} lost, "
            f"{len(skipped_nodes)} node(s) skipped; {pretty_bytes(copied_bytes)} copied; "
            f"wall time {pretty_seconds(wall)}")
        width = max([len(f"{o.shard} -> {o.node}") for o in outcomes] + [10])
        for o in outcomes:
            what = {COPIED: f"copied  {pretty_bytes(o.size_bytes):>9}", ALREADY: "already on the node",
                    FAILED: f"FAILED  attempt {o.attempt} of {self.max_attempts}",
                    RELEASED: "released", LOST: "lost"}[o.kind]
            tail = f"  {o.detail}" if o.detail and o.kind != COPIED else ""
            say(f"  {o.shard + ' -> ' + o.node:<{width}}  {what:<22} {pretty_seconds(o.seconds):>8}{tail}")
        for node in skipped_nodes:
            say(f"  node {node} skipped: its tasks stay queued (see above)")
        for task_id, shard, node, attempts, detail, finished_at in still_failed:
            if task_id in self.outcomes:
                continue  # failed in this run: listed above
            say(f"  {shard} -> {node}  FAILED in an earlier run ({attempts} attempts, task {task_id}): {detail}; "
                f"to try again: {hints[task_id]}")
        for task_id, shard, node, worker, until, live in held:
            say(f"  {shard} -> {node}  still open: task {task_id} held by {worker} until {iso(until)}")
        say(f"exit {status}: {why}")
