"""The reporter hands each record to the sinks that take its type, in order.

Covers: a sink naming its `kinds` gets only those record types, a sink without `kinds`
gets every record; a sink added after records were routed gets the next ones too; a
sink that raises is logged and the sinks after it still get the record; the standard
notification sink hands a dry run's outcome to the default notifiers, each once.
"""

from __future__ import annotations

import io
import json
from typing import Any

from talon import log, models
from talon.metrics import Metrics
from talon.models import Notification
from talon.outcome import DRY_RUN, RECEIVED, ActionOutcome, EventOutcome, MatchOutcome
from talon.report import NotifySink, Reporter
from talon.rules.model import Action, Rule

EVENT = models.decode(json.dumps({"rule": "F", "priority": "Warning", "output": "o",
                                  "source": "syscall", "output_fields": {}}))
RULE = Rule(name="R", actions=(Action(name="a", actionner="t:x"),))


class Keep:
    def __init__(self, kinds: frozenset[type] | None = None, fail: bool = False) -> None:
        if kinds is not None:
            self.kinds = kinds
        self.fail = fail
        self.seen: list[Any] = []

    def __call__(self, o: Any) -> None:
        self.seen.append(o)
        if self.fail:
            raise RuntimeError("sink broke")


def test_sinks_get_the_record_types_they_take_in_order() -> None:
    every, matches = Keep(), Keep(frozenset({MatchOutcome}))
    reporter = Reporter([matches, every])
    received = EventOutcome(event=EVENT, status=RECEIVED)
    matched = MatchOutcome(event=EVENT, rule=RULE)
    reporter.report(received)
    reporter.report(matched)
    late = Keep(frozenset({EventOutcome}))
    reporter.add(late)
    reporter.report(received)
    reporter.report(matched)
    assert every.seen == [received, matched, received, matched]
    assert matches.seen == [matched, matched]
    assert late.seen == [received]


def test_a_failing_sink_is_logged_and_the_next_sinks_still_run() -> None:
    stream = io.StringIO()
    log.setup("json", stream=stream)
    broken, after = Keep(fail=True), Keep()
    record = MatchOutcome(event=EVENT, rule=RULE)
    Reporter([broken, after]).report(record)
    assert after.seen == [record]
    line = json.loads(stream.getvalue())
    assert line["message"] == "report" and line["error"] == "RuntimeError: sink broke"
    assert line["level"] == "error"


def test_dry_run_notifications_go_to_each_default_notifier_once() -> None:
    sent: list[tuple[tuple[str, ...], Notification]] = []
    reporter = Reporter.standard(Metrics(), notify=lambda names, n: sent.append((names, n)),
                                 default_notifiers=("slack", "webhook", "slack"),
                                 notify_dry_run=True)
    reporter.report(EventOutcome(event=EVENT, status=RECEIVED))
    reporter.report(ActionOutcome(event=EVENT, rule=RULE, action=RULE.actions[0],
                                  status=DRY_RUN, output="no action"))
    [(names, note)] = sent
    assert names == ("slack", "webhook")
    assert (note.status, note.rule, note.action, note.output) == (
        "dry_run", "R", "a", "no action")
    assert [type(s) for s in reporter.sinks][-1] is NotifySink
