"""Jobs: units of work other than trainings, claimed by one worker each, on SQLite and PostgreSQL."""

from datetime import datetime, timedelta

from iotnas.store import Store, TrainingStatus

NAME = "formats probenet/s2/1 @8"


def _past(seconds: float = 0.0) -> datetime:
    from iotnas.store.store import _now

    return _now() - timedelta(seconds=seconds)


def test_one_worker_holds_a_job_until_it_is_done_or_given_back(store_url):
    with Store.open(store_url, study_name="a", fingerprint="f") as store:
        assert store.claim_job(NAME, worker="w1", stale_before=_past(60))
        assert not store.claim_job(NAME, worker="w2", stale_before=_past(60))  # held by a live worker
        assert store.claim_job(NAME, worker="w1", stale_before=_past(60))  # a worker may claim its own again
        assert store.beat_job(NAME, worker="w1") and not store.beat_job(NAME, worker="w2")
        store.release_job(NAME, worker="w1")
        assert store.jobs() == []
        assert store.claim_job(NAME, worker="w2", stale_before=_past(60))  # given back: anyone may take it
        store.finish_job(NAME, worker="w2")
        (job,) = store.jobs()
        assert (job.name, job.status, job.worker) == (NAME, TrainingStatus.DONE, "w2")
        assert not store.claim_job(NAME, worker="w1", stale_before=_past(-60))  # done: never again, even if stale


def test_a_job_whose_worker_stopped_beating_or_died_is_taken_over(store_url):
    with Store.open(store_url, study_name="a", fingerprint="f") as store:
        assert store.claim_job(NAME, worker="w1", stale_before=_past(60))
        assert store.claim_job(NAME, worker="w2", stale_before=_past(-1))  # w1's last beat is older than this
        assert not store.beat_job(NAME, worker="w1")  # w1 learns it lost the job
        assert store.claim_job(NAME, worker="w3", stale_before=_past(60), dead_workers=["w2"])
        assert [j.worker for j in store.jobs()] == ["w3"]


def test_jobs_belong_to_their_study(store_url):
    with Store.open(store_url, study_name="a", fingerprint="f") as store:
        assert store.claim_job(NAME, worker="w1", stale_before=_past(60))
    with Store.open(store_url, study_name="b", fingerprint="g") as store:
        assert store.jobs() == []
        assert store.claim_job(NAME, worker="w2", stale_before=_past(60))  # the same name in another study
