"""End to end: every published message is stored, a duplicate, or one dead letter.

The mixtures of ``tests/accounting.py`` (valid events, duplicates, invalid messages
of every kind, on short and over-long channels) are published with an ordinary
Redis client to a real ``analytics bridge`` and a real worker (the fixtures of
``test_fuzz.py``, with small ``MAX_PAYLOAD_BYTES`` / ``DEAD_LETTER_KEEP_BYTES``),
on PostgreSQL. After each example the test waits until the database accounts for
every message (or fails after a timeout), and prints what it sent and counted.
Once all examples ran it waits a moment and checks them all again, so that a
late extra row (a second dead letter, a redelivered batch) is caught too.
``tests/tasks/test_accounting.py`` is the same check, in process.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from tests.accounting import (
    LIMITS_ENV,
    Expected,
    Mixture,
    check,
    count_stored,
    invalid_drafts,
    mixtures,
    render,
)

pytestmark = [pytest.mark.slow, pytest.mark.fault, pytest.mark.usefixtures("fresh_broker")]

EXAMPLES = 200
#: Longest wait for one example's messages to be accounted for.
SETTLE_TIMEOUT = 30.0
#: After the last example: time for anything late to land before the final check.
LINGER = 2.0


def test_every_published_message_is_stored_a_duplicate_or_one_dead_letter(
    pg, start_worker, start_bridge, redis_client, pipeline_env, channel_prefix
):
    env = {**pipeline_env, **LIMITS_ENV}
    worker = start_worker(env=env)
    bridge = start_bridge(env=env)
    runs: list[Expected] = []
    totals: Counter[str] = Counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate],  # shrinking would replay through the processes many times
        suppress_health_check=list(HealthCheck),
    )
    @given(mixtures(invalid_drafts, max_valid=12, max_invalid=8))
    def example(mixture: Mixture) -> None:
        expected = render(mixture, f"{channel_prefix}:")
        pipe = redis_client.pipeline(transaction=False)
        for message in expected.messages:
            pipe.publish(message.channel, message.data)
        assert all(receivers == 1 for receivers in pipe.execute())
        began = time.monotonic()
        while problems := check(pg, expected):
            assert worker.alive and bridge.alive, "the worker or the bridge died"
            if time.monotonic() - began > SETTLE_TIMEOUT:
                pytest.fail(
                    f"not accounted for after {SETTLE_TIMEOUT:.0f}s: {mixture!r}\n"
                    + "\n".join(problems)
                )
            time.sleep(0.05)
        stored, letters = count_stored(pg, [expected])
        print(
            f"[accounting] sent {expected.sent} (valid {expected.valid}, dup "
            f"{expected.duplicates}, invalid {expected.invalid}) -> stored {stored}, "
            f"dead letters {letters} ({time.monotonic() - began:.2f}s)",
            flush=True,
        )
        runs.append(expected)
        totals.update(
            sent=expected.sent,
            valid=expected.valid,
            duplicates=expected.duplicates,
            invalid=expected.invalid,
            stored=stored,
            letters=letters,
        )

    example()
    time.sleep(LINGER)
    assert worker.alive and bridge.alive
    late = [problem for run in runs for problem in check(pg, run)]
    assert not late, "after the examples settled:\n" + "\n".join(late)
    print(
        f"\n[accounting] {len(runs)} examples: sent {totals['sent']} (valid {totals['valid']}, "
        f"dup {totals['duplicates']}, invalid {totals['invalid']}) -> stored "
        f"{totals['stored']}, dead letters {totals['letters']}"
    )
    assert len(runs) >= EXAMPLES
