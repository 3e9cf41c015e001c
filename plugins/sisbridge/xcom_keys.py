"""The XCom keys the DAG's tasks hand each other, defined once.

A plain module, with no Airflow import, so that the sensor's check (`landing`), the review machinery
(`review`), the pipeline and the DAG all name a key the same way.
"""

# Task `wait_for_file`: the metadata of the object the sensor saw, for `load_raw` to pin.
SENSED_FILE = "sensed_file"
# Task `guard`: the request a reviewer reads (subject and body) when a run waits in `approve`.
APPROVAL = "approval"
# Task `approve`: the reviewer's answer (or that nobody answered in time).
REVIEW = "review"
# A field of `finalize`'s return value: the stale-file alert, when the school's file has not changed.
STALE_FILE_FIELD = "stale_file"
