"""The batch indexing job: readers, resumability, and the server picking the result up."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from indexing.batch import index_file, read_documents, read_jsonl
from indexing.collection import Collection
from indexing.errors import InvalidDocument

TINY = Path(__file__).parent / "fixtures" / "beir-tiny"


def test_beir_corpus_reads_as_is_with_title_prepended():
    docs = [d for chunk in read_documents(TINY / "corpus.jsonl", chunk_size=5) for d in chunk]
    assert len(docs) == 12 and docs[0].id == "p1"
    assert docs[0].text == "Honey bees Honey bees pollinate crops and flowers while collecting nectar."
    assert docs[1].text.startswith("Bumblebees")  # empty title: text alone
    assert docs[0].metadata == {"title": "Honey bees"}


def test_jsonl_records_keep_raw_unicode_line_separators(tmp_path: Path):
    """U+2028/U+0085 are legal raw inside JSON strings (MS MARCO has them); only newlines end a record."""
    path = tmp_path / "q.jsonl"
    texts = ["one\u2028two", "three\x85four", "five"]
    path.write_text("\n".join(json.dumps({"_id": str(i), "text": t}, ensure_ascii=False) for i, t in
                              enumerate(texts)) + "\n\n", encoding="utf-8")
    assert "\u2028" in path.read_text(encoding="utf-8")  # written raw, not escaped
    assert [r["text"] for r in read_jsonl(path)] == texts
    assert [d.text for c in read_documents(path) for d in c] == texts
    path.write_text('{"_id": "1", "text": "ok"}\n{"_id": 2, "text": \n', encoding="utf-8")
    with pytest.raises(InvalidDocument, match="line 2 of q.jsonl"):
        read_jsonl(path)


def test_job_reports_documents_longer_than_the_model_reads(tmp_path: Path, embedder):
    path = tmp_path / "docs.jsonl"
    rows = [{"_id": "a", "text": "short text"}, {"_id": "b", "text": "many words here " * 200},
            {"_id": "c", "text": "another short one"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    report = index_file(tmp_path / "data", "docs", path, embedder, progress=False, chunk_tokens=0)
    assert (report.indexed, report.truncated, report.chunked) == (3, 1, 0)


def test_job_chunks_long_documents_of_a_new_collection(tmp_path: Path, embedder):
    path = tmp_path / "docs.jsonl"
    needle = "The lighthouse keeper logged every passing ship in a leather book."
    long_text = "Cows graze in the meadow all summer long. " * 60 + needle
    rows = [{"_id": "a", "text": "short text"}, {"_id": "b", "text": long_text}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    report = index_file(tmp_path / "data", "docs", path, embedder, progress=False)
    assert (report.indexed, report.truncated, report.chunked) == (2, 0, 1) and report.vectors > 3
    coll = Collection.open(tmp_path / "data" / "collections" / "docs")
    assert (coll.config.chunk_tokens, coll.config.chunk_overlap) == (254, 31)
    assert len(coll.index) == report.vectors
    hit = coll.search(embedder.encode(["who logged the passing ships?"], input_type="query"), 1)[0].hits[0]
    assert hit.id == "b" and hit.chunk is not None and hit.chunk.part > 0 and needle in hit.passage
    coll.close()
    with pytest.raises(InvalidDocument, match="was created with chunk_tokens 254"):
        index_file(tmp_path / "data", "docs", path, embedder, progress=False, chunk_tokens=128)


def test_csv_and_parquet_with_named_fields(tmp_path: Path):
    csv_path = tmp_path / "docs.csv"
    csv_path.write_text('doc,body,lang\n1,"first, with a comma",en\n2,second,de\n')
    docs = [d for c in read_documents(csv_path, id_field="doc", text_field="body") for d in c]
    assert [(d.id, d.text, d.metadata) for d in docs] == [("1", "first, with a comma", {"lang": "en"}),
                                                          ("2", "second", {"lang": "de"})]
    pq_path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"key": ["a", "b", "c"], "content": ["x", "y", "z"], "n": [1, 2, 3]}), pq_path)
    chunks = list(read_documents(pq_path, id_field="key", text_field="content", chunk_size=2))
    assert [len(c) for c in chunks] == [2, 1]  # streamed in bounded chunks
    assert chunks[1][0].metadata == {"n": 3}
    nan_path = tmp_path / "gaps.parquet"  # a NaN cell is a missing value: stored as null, not as NaN
    pq.write_table(pa.table({"key": ["a", "b"], "content": ["x", "y"], "score": [0.5, float("nan")]}), nan_path)
    docs = next(read_documents(nan_path, id_field="key", text_field="content"))
    assert [d.metadata for d in docs] == [{"score": 0.5}, {"score": None}]
    with pytest.raises(InvalidDocument, match="--id-field/--text-field"):
        next(read_documents(pq_path))


def test_job_resumes_after_interruption(tmp_path: Path, embedder):
    first = index_file(tmp_path, "tiny", TINY / "corpus.jsonl", embedder, limit=5, chunk_size=2, progress=False)
    assert (first.indexed, first.skipped, first.count) == (5, 0, 5)
    second = index_file(tmp_path, "tiny", TINY / "corpus.jsonl", embedder, chunk_size=4, progress=False)
    assert (second.indexed, second.skipped, second.count) == (7, 5, 12)
    coll = Collection.open(tmp_path / "collections" / "tiny")
    assert len(coll.index) == coll.store.count() == 12
    assert coll.search(embedder.encode(["largest planet storm"], input_type="query"), 1)[0].hits[0].id == "p5"
    coll.close()
    manifest = json.loads((tmp_path / "collections" / "tiny" / "manifest.json").read_text())
    assert manifest["count"] == 12 and manifest["model"] == embedder.name


def test_a_rerun_on_an_edited_file_syncs_it(tmp_path: Path, embedder):
    rows = read_jsonl(TINY / "corpus.jsonl")
    first = tmp_path / "v1.jsonl"
    first.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert index_file(tmp_path, "sync", first, embedder, progress=False).indexed == len(rows)
    folder = tmp_path / "collections" / "sync"
    coll = Collection.open(folder)
    before = {d.id: d for d in coll.store.get_by_ids([r["_id"] for r in rows])}
    old_vectors = dict(zip(*coll.store.vectors_for([before["p1"].vid, before["p2"].vid]), strict=True))
    coll.close()

    edited = [dict(r) for r in rows]
    edited[0]["text"] = "A violin concerto was first played in Vienna in 1806."  # p1: new text
    edited[1]["reviewed"] = True  # p2: same text, a new metadata field
    second = tmp_path / "v2.jsonl"
    second.write_text("".join(json.dumps(r) + "\n" for r in edited))
    report = index_file(tmp_path, "sync", second, embedder, progress=False)
    assert (report.indexed, report.updated, report.metadata_updated, report.skipped) == (1, 1, 1, len(rows) - 2)
    coll = Collection.open(folder)
    p1, p2 = coll.store.get_by_ids(["p1", "p2"])
    assert p1.text.endswith("A violin concerto was first played in Vienna in 1806.") and p2.metadata["reviewed"] is True
    vids, vectors = coll.store.vectors_for([p1.vid, p2.vid])
    now = dict(zip(vids, vectors, strict=True))
    assert np.array_equal(now[p2.vid], old_vectors[p2.vid])  # metadata-only: not embedded again
    assert not np.allclose(now[p1.vid], old_vectors[p1.vid])
    query = embedder.encode(["when was the violin concerto premiered in Vienna"], input_type="query")
    hits = coll.search(query, 1)[0].hits
    assert hits[0].id == "p1" and len(coll.index) == coll.store.count() == len(rows)
    coll.close()


def test_prune_deletes_what_the_file_no_longer_holds(tmp_path: Path, embedder):
    rows = read_jsonl(TINY / "corpus.jsonl")
    index_file(tmp_path, "pruned", TINY / "corpus.jsonl", embedder, progress=False)
    shorter = tmp_path / "v2.jsonl"
    shorter.write_text("".join(json.dumps(r) + "\n" for r in rows[2:]))
    kept = index_file(tmp_path, "pruned", shorter, embedder, progress=False)  # a plain sync never deletes
    assert (kept.deleted, kept.count) == (0, len(rows))
    report = index_file(tmp_path, "pruned", shorter, embedder, progress=False, prune=True)
    assert (report.deleted, report.indexed, report.count) == (2, 0, len(rows) - 2)
    coll = Collection.open(tmp_path / "collections" / "pruned")
    assert coll.store.get_by_ids([rows[0]["_id"], rows[1]["_id"]]) == []
    assert len(coll.index) == coll.store.count() == len(rows) - 2
    coll.close()
    with pytest.raises(InvalidDocument, match="prune: needs the whole file"):
        index_file(tmp_path, "pruned", shorter, embedder, progress=False, prune=True, limit=3)


def test_job_into_an_alias_fills_the_collection_it_names(tmp_path: Path, embedder):
    from indexing.catalog import CollectionCatalog

    index_file(tmp_path, "kb-v1", TINY / "corpus.jsonl", embedder, limit=3, progress=False)
    cat = CollectionCatalog(tmp_path)
    cat.open_all()
    cat.point_alias("kb", "kb-v1")
    cat.close()
    report = index_file(tmp_path, "kb", TINY / "corpus.jsonl", embedder, progress=False)
    assert report.collection == "kb-v1" and (report.indexed, report.skipped, report.count) == (9, 3, 12)
    assert not (tmp_path / "collections" / "kb").exists()


def test_cli_job_output_is_served_after_reload(live_server):
    from cli.main import app

    result = CliRunner().invoke(app, ["index", "--collection", "jobbed", "--input", str(TINY / "corpus.jsonl"),
                                      "--data-dir", str(live_server.data_dir), "--device", "cpu",
                                      "--metadata-index", "title", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "indexed 12" in result.output and "metadata indexes built: title" in result.output
    with live_server.client() as c:
        r = c.post("/v1/collections/jobbed/reload")
        assert r.status_code == 200 and r.json()["count"] == 12 and r.json()["metadata_indexes"] == ["title"]
        hits = c.post("/v1/collections/jobbed/search", json={"query": "version control history"}).json()["hits"]
        assert hits[0]["id"] == "p9"
        # The job records how it embedded each text: the server re-upserting the same text embeds nothing.
        stored = c.get("/v1/collections/jobbed/documents/p9").json()
        r = c.post("/v1/collections/jobbed/documents", json={"documents": [{"id": "p9", "text": stored["text"]}]})
        assert r.status_code == 200 and r.json()["unchanged"] == 1
        c.delete("/v1/collections/jobbed")
