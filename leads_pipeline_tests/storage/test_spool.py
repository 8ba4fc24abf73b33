"""The listing spool: one row per page, unchanged rows skipped, changed content always kept."""

import datetime as dt
import os
import subprocess
import sys

import pyarrow as pa
from deltalake import DeltaTable

from leads_pipeline.storage.lake import DeltaLake
from leads_pipeline.storage.raw_store import append_raw, pages_to_raw
from leads_pipeline.storage.spool import RawSpool
from leads_pipeline.tables import RAW_TABLE
from leads_pipeline_tests.pages import make_page

NOW = dt.datetime(2025, 3, 10, tzinfo=dt.UTC)
TS = pa.timestamp("us", tz="UTC")


def stamp(text):
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_select_dedupes_and_skips_only_certainly_unchanged_rows():
    old = "2025-03-01T10:00:00.000Z"
    recent = "2025-03-09T10:00:00.000Z"
    with RawSpool() as spool:
        spool.append(pages_to_raw([make_page("a", edited=old), make_page("b", edited=old)], NOW))
        spool.append(
            pages_to_raw(
                [
                    make_page("a", edited=recent),
                    make_page("c", edited=recent),
                    make_page("d", edited=old),
                ],
                NOW,
            )
        )
        stored = pa.table(
            {
                "page_id": ["a", "b", "c", "d"],
                "last_edited_time": pa.array(
                    [stamp(old), stamp(old), stamp(recent), stamp(old)], TS
                ),
                "in_trash": [False, False, False, False],
                "deleted_at": pa.array([None, None, None, NOW], TS),
                # Synced in the minute of their edit: none has settled.
                "synced_at": pa.array([stamp(old), stamp(old), stamp(recent), stamp(old)], TS),
            }
        )
        keep = spool.select(stored, unchanged_before=stamp("2025-03-09T09:58:00.000Z"))
        # a: only its latest listing; b: same old edit, skipped; c: same minute as the
        # watermark, kept for a full comparison; d: deleted in raw, kept to be restored.
        assert keep.to_pylist() == [False, False, True, True, True]
        assert spool.read(keep)["page_id"].to_pylist() == ["a", "c", "d"]
        assert spool.rows == 5
        assert [b.num_rows for b in spool.batches()] == [2, 3]
        everything = spool.select(None, None)
        assert everything.to_pylist() == [False, True, True, True, True]


def test_select_skips_recent_rows_whose_stored_copy_has_settled():
    edited = "2025-03-09T10:00:00.000Z"
    pages = [make_page(name, edited=edited) for name in ("settled", "fresh", "trashed")]
    pages[2]["in_trash"] = True
    with RawSpool() as spool:
        spool.append(pages_to_raw(pages, NOW))
        stored = pa.table(
            {
                "page_id": ["settled", "fresh", "trashed"],
                "last_edited_time": pa.array([stamp(edited)] * 3, TS),
                "in_trash": [False, False, False],
                "deleted_at": pa.array([None, None, None], TS),
                # Synced 5 minutes after the edit minute: a later edit would show a later time.
                # Synced sooner: an edit later in that minute (or not yet visible, or seen
                # through a skewed clock) may keep the same time.
                "synced_at": pa.array(
                    [
                        stamp("2025-03-09T10:05:00.000Z"),
                        stamp("2025-03-09T10:04:59.000Z"),
                        stamp("2025-03-09T10:30:00.000Z"),
                    ],
                    TS,
                ),
            }
        )
        keep = spool.select(stored, unchanged_before=stamp("2025-03-09T09:58:00.000Z"))
        # The trashed page changed state: kept whatever its sync time.
        assert keep.to_pylist() == [False, True, True]


def test_compare_writes_pages_whose_content_changed_without_a_new_edit_time(tmp_path):
    edited = "2025-03-01T10:00:00.000Z"
    later = "2025-03-02T10:00:00.000Z"
    stored_pages = [
        make_page("same", email="a@b.fr", edited=edited),
        make_page("value", email="a@b.fr", edited=edited),
        make_page("link", edited=edited),
        make_page("born", edited=edited),
        make_page("edited", edited=edited),
        make_page("gone", edited=edited),
        make_page("kept", edited=edited),
    ]
    lake = DeltaLake(str(tmp_path / "lake"))
    append_raw(lake, pages_to_raw(stored_pages, NOW).to_batches(), {})
    DeltaTable(lake.table_uri(RAW_TABLE)).update(
        predicate="page_id = 'gone'", updates={"deleted_at": "now()"}
    )

    listed = [
        make_page("same", email="a@b.fr", edited=edited),
        make_page("value", email="changed@b.fr", edited=edited),  # a formula over now()
        {**make_page("link", edited=edited), "url": "https://www.notion.so/moved"},
        make_page("born", edited=edited, created="2025-01-01T00:00:00.000Z"),
        make_page("edited", edited=later),  # a real edit: written, not "without edit"
        make_page("gone", edited=edited),  # deleted in raw: restored
        make_page("kept", edited=edited),
        make_page("kept", edited=edited),  # listed twice: one row only, and unchanged
        make_page("new", edited=later),
    ]
    with RawSpool() as spool:
        spool.append(pages_to_raw(listed[:4], NOW))
        spool.append(pages_to_raw(listed[4:], NOW))
        comparison = spool.compare(lake.load(RAW_TABLE).to_pyarrow_dataset())
        assert comparison.mask.to_pylist() == [
            False,
            True,
            True,
            True,
            True,
            True,
            False,
            False,
            True,
        ]
        assert comparison.changed_without_edit == 3  # value, link, born
        assert spool.content_hashes().type == pa.uint64()


def test_a_spool_left_by_a_killed_process_is_removed_by_the_next_one(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = tmp_path / f"leads_spool_{gone.pid}_abc"
    dead.mkdir()
    (dead / "rows.arrow").write_bytes(b"x" * 1000)
    live = tmp_path / f"leads_spool_{os.getpid()}_def"
    live.mkdir()
    foreign = tmp_path / "leads_spool_unnamed"
    foreign.mkdir()
    with RawSpool(directory=str(tmp_path)) as spool:
        assert spool.path.parent.name.startswith(f"leads_spool_{os.getpid()}_")
        assert not dead.exists()
        assert live.exists() and foreign.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, foreign.name])
