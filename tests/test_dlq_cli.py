"""`thumbify dlq requeue` through the real CLI against a real redis-server: an argument that is neither a job id
nor a dead-letter entry id (`nope`, an upper-case job id, a stream id Redis cannot parse) is one line saying there
is no such entry and a non-zero exit, never a traceback; a real entry is still found by its id."""

from __future__ import annotations

import uuid

import pytest
import redis
from support.cli import cli

from thumbify.keyspace import Keys

pytestmark = pytest.mark.service  # it runs the CLI

NOT_ENTRIES = ["nope", "0123456789ABCDEF0123456789ABCDEF", "1-x", "99999999999999999999-0", "1-0"]


@pytest.fixture
def dead_letter(redis_server: str) -> tuple[dict, str]:
    """A key prefix of its own holding one dead-letter entry (for a job that is gone), and that entry's id."""
    prefix = f"dlq-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_server, decode_responses=True)
    entry = client.xadd(Keys(prefix).dead, {"job": uuid.uuid4().hex, "reason": "gave up", "attempts": "5"})
    client.close()
    return {"redis_url": redis_server, "key_prefix": prefix}, entry


@pytest.mark.parametrize("given", NOT_ENTRIES)
def test_requeue_of_what_is_no_entry_says_so_in_one_line(dead_letter: tuple[dict, str], given: str) -> None:
    env, _ = dead_letter
    done = cli("dlq", "requeue", given, **env)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    said = [line for line in (done.stdout + done.stderr).splitlines() if "no such entry" in line]
    assert len(said) == 1 and given in said[0], done.stderr


def test_a_real_entry_is_still_found_next_to_a_bad_one(dead_letter: tuple[dict, str]) -> None:
    env, entry = dead_letter
    done = cli("dlq", "requeue", "nope", entry, **env)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    said = done.stdout + done.stderr
    assert f"{entry} " in said and "job gone; entry removed" in said and "nope -: no such entry" in said, said
    assert done.returncode == 1  # one of the two was no entry
    listed = cli("dlq", "list", "--json", **env)
    assert listed.returncode == 0 and entry not in listed.stdout, listed.stdout
