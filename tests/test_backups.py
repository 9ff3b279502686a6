"""Backups taken while a collection serves, and restores into new collections: over a real server, under
concurrent writes, from damaged files, and through the CLI."""

from __future__ import annotations

import io
import tarfile
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from indexing.backup import BackupError, backup_folder, fill_from_backup, read_backup
from indexing.batch import read_jsonl
from indexing.calibration.shipped import shipped_calibration
from indexing.catalog import CollectionCatalog
from indexing.collection import CollectionConfig
from indexing.store import Document
from service.collections import DEMO_CORPUS

QUERY = {"query": "how far does light travel in a year", "top_k": 5, "min_relevance": 0}


def _hits(client, name: str, body: dict) -> list[tuple]:
    r = client.post(f"/v1/collections/{name}/search", json=body)
    assert r.status_code == 200, r.text
    return [(h["id"], round(h["score"], 5), h["relevance"]) for h in r.json()["hits"]]


@pytest.fixture()
def calibrated(client) -> str:
    """The demo corpus in a collection of its own, with the calibration rrs ships for the served model."""
    name = f"bk-demo-{uuid.uuid4().hex[:6]}"
    info = client.post("/v1/collections", json={"name": name}).json()
    docs = read_jsonl(DEMO_CORPUS)
    r = client.post(f"/v1/collections/{name}/documents", json={"documents": docs})
    assert r.status_code == 200, r.text
    r = client.put(f"/v1/collections/{name}/calibration", json=shipped_calibration(info["model"], info["dim"]))
    assert r.status_code == 200, r.text
    yield name
    client.delete(f"/v1/collections/{name}")


def test_a_restored_collection_answers_like_the_original(client, calibrated, tmp_path: Path):
    name = f"demo-copy-{uuid.uuid4().hex[:6]}"
    r = client.post(f"/v1/collections/{calibrated}/backups")
    assert r.status_code == 201, r.text
    info = r.json()
    demo = client.get(f"/v1/collections/{calibrated}").json()
    assert info["collection"] == calibrated and info["documents"] == demo["count"] and info["calibrated"] is True
    listed = client.get("/v1/backups", params={"collection": calibrated}).json()["data"]
    assert [b["id"] for b in listed] == [info["id"]]

    r = client.post(f"/v1/backups/{info['id']}/restore", json={"name": name})
    assert r.status_code == 201, r.text
    restored = r.json()
    assert (restored["name"], restored["count"], restored["calibrated"]) == (name, demo["count"], True)
    assert restored["indexed"] == demo["indexed"] and restored["chunk_tokens"] == demo["chunk_tokens"]
    original = _hits(client, calibrated, QUERY)
    assert original and original[0][2] is not None
    assert _hits(client, name, QUERY) == original  # same hits, scores and calibrated relevance
    lexical = {"query": QUERY["query"], "top_k": 5, "mode": "lexical"}
    assert _hits(client, name, lexical) == _hits(client, calibrated, lexical)

    # The archive carries the backup off the machine: extracted anywhere, it restores there.
    r = client.get(f"/v1/backups/{info['id']}/archive")
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-tar"
    assert int(r.headers["content-length"]) == len(r.content)
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        tar.extractall(tmp_path / "offsite", filter="data")
    (extracted,) = (tmp_path / "offsite").iterdir()
    checked = read_backup(extracted)  # every file matches its checksum after the trip
    elsewhere = CollectionCatalog(tmp_path / "elsewhere")
    copy = elsewhere.adopt("copy", lambda target: fill_from_backup(checked, extracted, target, "copy"))
    assert copy.store.count() == demo["count"]
    elsewhere.close()
    assert client.get("/v1/backups/demo/20200101T000000Z-000000/archive").status_code == 404

    # Restoring over an existing collection, an unknown backup, or a malformed id are refused.
    assert client.post(f"/v1/backups/{info['id']}/restore", json={"name": name}).status_code == 409
    assert client.post("/v1/backups/demo/20200101T000000Z-000000/restore", json={"name": "x1"}).status_code == 404
    r = client.post("/v1/backups/demo/yesterday/restore", json={"name": "x1"})
    assert r.status_code == 400 and "not a backup id" in r.text
    assert client.delete(f"/v1/collections/{name}").status_code == 204
    assert client.delete(f"/v1/backups/{info['id']}").status_code == 204
    assert client.delete(f"/v1/backups/{info['id']}").status_code == 404
    assert client.post("/v1/collections/no-such/backups").status_code == 404


def test_metadata_indexes_feedback_and_texts_come_back(client):
    src, dst = f"bk-src-{uuid.uuid4().hex[:6]}", f"bk-dst-{uuid.uuid4().hex[:6]}"
    assert client.post("/v1/collections", json={"name": src, "metadata_indexes": ["lang"]}).status_code == 201
    docs = [{"id": "a", "text": "Bees make honey from nectar.", "metadata": {"lang": "en"}},
            {"id": "b", "text": "Bienen machen Honig.", "metadata": {"lang": "de"}}]
    assert client.post(f"/v1/collections/{src}/documents", json={"documents": docs}).status_code == 200
    judged = {"query": "honey", "judgments": [{"id": "a", "relevance": 3}]}
    r = client.post(f"/v1/collections/{src}/feedback", json=judged)
    assert r.status_code == 200, r.text
    backup = client.post(f"/v1/collections/{src}/backups").json()
    assert backup["metadata_indexes"] == ["lang"] and backup["calibrated"] is False
    assert client.post(f"/v1/backups/{backup['id']}/restore", json={"name": dst}).status_code == 201
    info = client.get(f"/v1/collections/{dst}").json()
    assert info["metadata_indexes"] == ["lang"] and info["name"] == dst
    assert client.get(f"/v1/collections/{dst}/feedback").json()["judgments"] == 1
    got = client.get(f"/v1/collections/{dst}/documents").json()["data"]
    assert [(d["id"], d["text"], d["metadata"]) for d in got] == [(d["id"], d["text"], d["metadata"]) for d in docs]
    body = {"query": "honey", "filter": {"lang": "de"}, "min_relevance": None}
    assert [h["id"] for h in client.post(f"/v1/collections/{dst}/search", json=body).json()["hits"]] == ["b"]
    for name in (src, dst):
        client.delete(f"/v1/collections/{name}")
    client.delete(f"/v1/backups/{backup['id']}")


def test_backups_taken_during_writes_are_consistent_and_damage_is_caught(tmp_path: Path):
    """Each backup holds a whole number of the writer's transactions, and restores to exactly that."""
    cat = CollectionCatalog(tmp_path / "data")
    coll = cat.create(CollectionConfig("busy", "m", 8))
    batch, rounds = 50, 40
    rng = np.random.default_rng(0)

    def writer() -> None:
        for r in range(rounds):
            coll.upsert([Document(f"d{r:03d}-{i:02d}", f"t {r} {i}", {"round": r}) for i in range(batch)],
                        rng.standard_normal((batch, 8)).astype(np.float32))

    thread = threading.Thread(target=writer)
    thread.start()
    infos = []
    while thread.is_alive() or not infos:
        infos.append(backup_folder(coll.folder, "busy", tmp_path / "backups"))
    thread.join()
    assert len(infos) >= 2
    for k, info in enumerate(infos):
        assert info["documents"] % batch == 0  # never half a transaction
        path = tmp_path / "backups" / info["id"]
        name = f"r{k}"
        restored = cat.adopt(name, lambda target, p=path, n=name: fill_from_backup(read_backup(p), p, target, n))
        ids = [d.id for d in restored.store.page(10_000)]
        assert len(ids) == info["documents"] == len(restored.index)
        rounds_in = info["documents"] // batch
        assert ids == [f"d{r:03d}-{i:02d}" for r in range(rounds_in) for i in range(batch)]  # a prefix of the writes
    last = tmp_path / "backups" / infos[-1]["id"]
    with open(last / "store.sqlite3", "r+b") as fh:  # one flipped byte deep in the file
        fh.seek(8192)
        byte = fh.read(1)
        fh.seek(8192)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(BackupError, match="does not match its checksum"):
        read_backup(last)
    with pytest.raises(BackupError, match="incomplete"):
        read_backup(tmp_path / "backups" / "busy" / "nothing-here")
    assert not [p for p in (tmp_path / "data" / "collections").iterdir() if p.name.startswith(".adopt")]
    cat.close()


def test_cli_backup_and_restore(tmp_path: Path):
    from cli.main import app

    data = tmp_path / "data"
    cat = CollectionCatalog(data)
    coll = cat.create(CollectionConfig("src", "m", 4), metadata_indexes=["k"])
    x = np.random.default_rng(3).standard_normal((4, 4)).astype(np.float32)
    coll.upsert([Document(f"d{i}", f"text {i}", {"k": i}) for i in range(4)], x)
    want = [(h.id, h.score) for h in coll.search(x[:1], 4)[0].hits]
    cat.close()

    result = CliRunner().invoke(app, ["backup", "-c", "src", "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    backup_id = result.output.split(":")[0]
    result = CliRunner().invoke(app, ["restore", "--backup", str(data / "backups" / backup_id), "-c", "dst",
                                      "--data-dir", str(data)])
    assert result.exit_code == 0 and "restored 4 documents" in result.output, result.output
    result = CliRunner().invoke(app, ["restore", "--backup", str(data / "backups" / backup_id), "-c", "dst",
                                      "--data-dir", str(data)])
    assert result.exit_code == 2 and "already exists" in result.output

    cat = CollectionCatalog(data)
    cat.open_all()
    dst = cat.get("dst")
    assert [(h.id, h.score) for h in dst.search(x[:1], 4)[0].hits] == want
    assert dst.metadata_indexes() == ["k"] and dst.config.name == "dst"
    cat.close()


def test_a_restore_loads_the_index_snapshot_and_replays_later_writes(tmp_path: Path, monkeypatch):
    """The backup keeps the snapshot; the store copy is newer; the restore rebuilds nothing."""
    import indexing.collection as collection_module

    cat = CollectionCatalog(tmp_path / "data", snapshot_every=10**6)
    coll = cat.create(CollectionConfig("src", "m", 8, index_kind="hnsw"))
    rng = np.random.default_rng(4)
    x = rng.standard_normal((300, 8)).astype(np.float32)
    coll.upsert([Document(f"d{i}", f"t {i}", {}) for i in range(200)], x[:200])
    coll.snapshot()
    coll.upsert([Document(f"d{i}", f"t {i}", {}) for i in range(200, 300)], x[200:])  # after the snapshot
    coll.delete(["d3"])
    want = [(h.id, h.score) for h in coll.search(x[:2], 10)[0].hits]
    kept = backup_folder(coll.folder, "src", tmp_path / "backups")
    bare = backup_folder(coll.folder, "src", tmp_path / "backups", include_index=False)
    assert kept["index"] == "hnsw" and bare["index"] is None and kept["bytes"] > bare["bytes"]

    builds = []
    real_build = collection_module._build_from_store
    monkeypatch.setattr(collection_module, "_build_from_store", lambda *a: builds.append(1) or real_build(*a))
    restored = cat.adopt("kept", lambda t: fill_from_backup(read_backup(tmp_path / "backups" / kept["id"]),
                                                            tmp_path / "backups" / kept["id"], t, "kept"))
    assert builds == [] and restored.index.kind == "hnsw"  # loaded, and 100 writes replayed onto it
    assert len(restored.index) == 299 and [(h.id, h.score) for h in restored.search(x[:2], 10)[0].hits] == want
    rebuilt = cat.adopt("bare", lambda t: fill_from_backup(read_backup(tmp_path / "backups" / bare["id"]),
                                                           tmp_path / "backups" / bare["id"], t, "bare"))
    assert builds == [1] and len(rebuilt.index) == 299

    # A snapshot that passes its checksum but does not load (here: rewritten, with backup.json to match)
    # is rebuilt from the store rather than failing the restore.
    import hashlib
    import json

    path = tmp_path / "backups" / kept["id"]
    meta = json.loads((path / "backup.json").read_text())
    index_file = meta["index"]["index_file"]
    (path / index_file).unlink()  # a hard link to the live snapshot: replace it, do not write through it
    (path / index_file).write_bytes(b"not an index")
    digest = hashlib.sha256(b"not an index").hexdigest()
    meta["files"][index_file] = {"bytes": 12, "sha256": digest}
    meta["index"].update(sha256=digest, bytes=12)
    (path / "backup.json").write_text(json.dumps(meta))
    again = cat.adopt("again", lambda t: fill_from_backup(read_backup(path), path, t, "again"))
    assert builds == [1, 1] and [(h.id, h.score) for h in again.search(x[:2], 10)[0].hits][:3] == want[:3]
    assert coll.search(x[:2], 10)[0].hits[0].id == want[0][0]  # the live collection's snapshot is untouched
    cat.close()
