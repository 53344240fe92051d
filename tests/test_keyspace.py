"""The names Thumbify's data lives under: Redis keys (thumbify.keyspace) and storage keys (thumbify.storage.layout).

They are the data's format: a server restarted on an existing Redis and storage finds its jobs by them, so they are
pinned here as strings. The Lua scripts (thumbify.state) derive some names themselves; a job taken through every
index and deleted must leave nothing behind under its prefix, which holds only if they derive them as `Keys` does.
"""

from __future__ import annotations

import asyncio
import uuid

from thumbify.batches import BatchStore, subject
from thumbify.batches import record as batch_record
from thumbify.jobs import JobStore, callback_fields, new_job_id
from thumbify.keyspace import Keys
from thumbify.queue import JobQueue
from thumbify.redis_conn import connect
from thumbify.spec import ThumbnailSpec
from thumbify.state import Status
from thumbify.storage import job_prefixes, original_key, thumbnail_key, thumbnails_prefix


def test_redis_key_names_stay_as_they_were() -> None:
    k = Keys("p")
    assert (k.job("j"), k.job_prefix, k.index, k.index_of(Status.done), k.owner_index("alice")) == (
        "p:job:j",
        "p:job:",
        "p:index",
        "p:index:done",
        "p:index:owner:alice",
    )
    assert (k.events, k.stream, k.delayed, k.dead, k.workers, k.worker("w1")) == (
        "p:events",
        "p:jobs",
        "p:delayed",
        "p:dead",
        "p:workers",
        "p:worker:w1",
    )
    assert (k.cleanup_lock, k.rate("c"), k.uploads("c")) == ("p:lock:cleanup", "p:rate:c", "p:upload-leases:c")
    # As api.idempotency named it before Keys did (its sha256 of "c\0key").
    assert k.idempotency("c", "key") == "p:idem:576282414a3bf356b238314962e2e05d301531f827cb63ae0dbd7da0e8c4eeea"


def test_storage_keys_stay_as_they_were() -> None:
    assert original_key("j") == "originals/j"
    assert thumbnails_prefix("j") == "thumbnails/j"
    assert thumbnail_key("j", "t.jpg") == "thumbnails/j/t.jpg"
    assert job_prefixes("j") == ("originals/j", "thumbnails/j")


def test_the_scripts_name_keys_as_keys_does(redis_server: str) -> None:
    keys = Keys(f"k{uuid.uuid4().hex[:8]}")

    async def main() -> tuple[list[str], list[str], set[str]]:
        redis = connect(redis_server)
        store, queue = JobStore(redis, keys), JobQueue(redis, keys)
        await queue.ensure_group()
        job_id = new_job_id()
        async with redis.pipeline(transaction=True) as pipe:
            store.add_to(pipe, job_id, store.record(job_id, {}, ThumbnailSpec(), "x", owner="alice"))
            queue.add_to(pipe, job_id)
            await pipe.execute()
        [message] = await queue.read("c1", 1, None)
        await store.start(job_id)
        processing = await redis.zrange(keys.index_of(Status.processing), 0, -1)
        await queue.complete(message, [])
        done = await redis.zrange(keys.index_of(Status.done), 0, -1)
        assert await store.delete(job_id)
        left = {k async for k in redis.scan_iter(match=f"{keys.prefix}:*")}
        await redis.aclose()
        return processing, done, left

    processing, done, left = asyncio.run(main())
    assert processing == done and len(done) == 1
    assert left == {keys.stream}  # the job's record and every index entry are gone; the (empty) stream stays


def test_batch_key_names_stay_as_they_were() -> None:
    assert (Keys("p").batch("b"), Keys("p").batch_jobs("b")) == ("p:batch:b", "p:batch:b:jobs")


def test_the_scripts_keep_a_batchs_counts_under_the_names_keys_gives(redis_server: str) -> None:
    """A batch of two jobs: the scripts count each one's moves on the batch `Keys` names, mark it completed and put
    its webhook on the outbox when the last ends, and take it away with its last job."""
    keys = Keys(f"k{uuid.uuid4().hex[:8]}")

    async def main() -> tuple[dict, list, set[str]]:
        redis = connect(redis_server)
        store, queue, batches = JobStore(redis, keys), JobQueue(redis, keys), BatchStore(redis, keys)
        await queue.ensure_group()
        batch_id, job_ids = new_job_id(), [new_job_id(), new_job_id()]
        callback = callback_fields("https://example.com/hook")
        async with redis.pipeline(transaction=True) as pipe:
            for job_id in job_ids:
                store.add_to(pipe, job_id, store.record(job_id, {}, ThumbnailSpec(), "x") | {"batch_id": batch_id})
                queue.add_to(pipe, job_id)
            batches.add_to(pipe, batch_id, batch_record("", "t", 2, [], "batch", callback), job_ids)
            await pipe.execute()
        messages = await queue.read("c1", 2, None)
        for job_id in job_ids:
            await store.start(job_id)
        await queue.complete(messages[0], [])
        assert (await batches.get(batch_id)).counts == {"queued": 0, "processing": 1, "done": 1, "failed": 0}
        await queue.fail(messages[1], {"type": "x", "detail": "y"})
        batch = await batches.get(batch_id)
        outbox = [fields["job"] for _, fields in await redis.xrange(keys.outbox)]
        for job_id in job_ids:
            assert await store.delete(job_id)
        left = {k async for k in redis.scan_iter(match=f"{keys.prefix}:*")}
        await redis.aclose()
        return batch, outbox, left

    batch, outbox, left = asyncio.run(main())
    assert batch.counts == {"queued": 0, "processing": 0, "done": 1, "failed": 1} and batch.completed_ms
    assert batch.callback["state"] == "pending" and outbox == [subject(batch.id)]
    assert left == {keys.stream, keys.outbox}  # the batch went with its last job


def test_a_batchs_counts_follow_releases_dead_letters_and_requeues(redis_server: str) -> None:
    """Every script that moves a job moves its batch's counts: a release, a burial, a requeue from the dead letters
    (the batch reopens; its webhook is not queued a second time when it completes again)."""
    keys = Keys(f"k{uuid.uuid4().hex[:8]}")

    async def main() -> list:
        redis = connect(redis_server)
        store, queue, batches = JobStore(redis, keys), JobQueue(redis, keys), BatchStore(redis, keys)
        await queue.ensure_group()
        batch_id, (first, second) = new_job_id(), (new_job_id(), new_job_id())
        async with redis.pipeline(transaction=True) as pipe:
            for job_id in (first, second):
                store.add_to(pipe, job_id, store.record(job_id, {}, ThumbnailSpec(), "x") | {"batch_id": batch_id})
                queue.add_to(pipe, job_id)
            hook = callback_fields("https://example.com/hook")
            batches.add_to(pipe, batch_id, batch_record("", "t", 2, [], "batch", hook), [first, second])
            await pipe.execute()

        async def seen() -> tuple:
            batch = await batches.get(batch_id)
            return batch.counts, batch.completed, await redis.xlen(keys.outbox)

        seen_at = []
        a, b = await queue.read("c1", 2, None)
        await store.start(first)
        await store.start(second)
        await queue.release("c1", [b.id])
        seen_at.append(await seen())  # second released: queued again
        await queue.complete(a, [])
        [b] = await queue.read("c1", 1, None)
        await store.start(second)
        await queue.bury(b, {"type": "x", "detail": "y"}, attempts=5)
        seen_at.append(await seen())  # completed: one done, one failed, the webhook queued
        [dead] = await queue.dead_entries()
        assert (await queue.requeue_dead(dead.id))[0] == 1
        seen_at.append(await seen())  # reopened
        [b] = await queue.read("c1", 1, None)
        await store.start(second)
        await queue.complete(b, [])
        seen_at.append(await seen())  # completed again: no second webhook
        await redis.aclose()
        return seen_at

    # (queued, processing, done, failed), completed, outbox entries: after each step.
    expected = [((1, 1, 0, 0), False, 0), ((0, 0, 1, 1), True, 1), ((1, 0, 1, 0), False, 1), ((0, 0, 2, 0), True, 1)]
    names = ("queued", "processing", "done", "failed")
    assert asyncio.run(main()) == [(dict(zip(names, n, strict=True)), c, o) for n, c, o in expected]
