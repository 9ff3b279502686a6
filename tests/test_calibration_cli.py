"""`rrs calibrate` end to end: fit on a labelled collection, export, apply to another, refuse other models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from indexing.batch import index_file
from indexing.calibration.schema import SCHEMA_VERSION
from indexing.calibration.shipped import shipped_calibration
from indexing.collection import Collection, CollectionConfig

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TOPICS = {
    "bees": [
        "Bees pollinate flowers while they collect nectar.",
        "Honey bees turn nectar into honey inside wax combs.",
        "A bee colony has one queen, drones and worker bees.",
        "Bumblebees can fly in colder weather than honey bees.",
        "Beekeepers harvest honey from hives in late summer.",
    ],
    "bread": [
        "Bread dough rises because yeast produces carbon dioxide.",
        "Kneading develops gluten, which traps gas in the dough.",
        "Sourdough uses wild yeast and lactic acid bacteria.",
        "Bakers proof dough in a warm place before baking.",
        "Whole wheat flour makes a denser loaf of bread.",
    ],
    "planets": [
        "Jupiter is the largest planet of the solar system.",
        "Saturn's rings are made of ice and rock.",
        "Mars has the tallest volcano, Olympus Mons.",
        "Venus is the hottest planet because of its thick atmosphere.",
        "Neptune has the strongest winds in the solar system.",
    ],
    "running": [
        "A marathon is 42.195 kilometres long.",
        "Runners carb-load before a long race.",
        "Interval training improves running speed.",
        "Good running shoes reduce the risk of injury.",
        "The first modern Olympic marathon was run in 1896.",
    ],
    "git": [
        "Git stores history as a graph of commits.",
        "A git branch is a movable pointer to a commit.",
        "Rebasing rewrites commits on top of another base.",
        "Git merge joins two histories with a merge commit.",
        "The staging area holds changes for the next commit.",
    ],
}
QUERIES = {
    "bees": ["how do bees make honey", "what do worker bees do"],
    "bread": ["why does bread dough rise", "how to bake sourdough"],
    "planets": ["largest planet in the solar system", "facts about planets"],
    "running": ["how long is a marathon", "training for a running race"],
    "git": ["what is a git commit", "git branch and merge"],
}


@pytest.fixture(scope="module")
def beir_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small BEIR folder: 25 passages, 10 queries; same-topic passages graded 2 or 3, one graded 1."""
    root = tmp_path_factory.mktemp("beir-calibration")
    (root / "qrels").mkdir()
    corpus, qrels, queries = [], ["query-id\tcorpus-id\tscore"], []
    for topic, passages in TOPICS.items():
        for i, text in enumerate(passages):
            corpus.append({"_id": f"{topic}-{i}", "title": "", "text": text})
    for topic, texts in QUERIES.items():
        for j, text in enumerate(texts):
            qid = f"{topic}-q{j}"
            queries.append({"_id": qid, "text": text})
            for i in range(len(TOPICS[topic])):
                qrels.append(f"{qid}\t{topic}-{i}\t{1 if (i + j) % 5 == 4 else 2 + (i % 2)}")
    (root / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in corpus) + "\n")
    (root / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries) + "\n")
    (root / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n")
    return root


def test_fit_export_apply_and_refuse_other_model(tmp_path: Path, beir_dir: Path, embedder) -> None:
    data = tmp_path / "data"
    for name in ("labelled", "unlabelled"):
        index_file(data, name, beir_dir / "corpus.jsonl", embedder, model_name=MODEL, progress=False)
    Collection.create(data / "collections" / "other", CollectionConfig("other", "BAAI/bge-small-en-v1.5", 384)).close()
    runner = CliRunner()
    exported = tmp_path / "calibration.json"
    result = runner.invoke(
        app,
        [
            "calibrate",
            "-c",
            "labelled",
            "--dataset",
            str(beir_dir),
            "--data-dir",
            str(data),
            "--folds",
            "3",
            "--depth",
            "12",
            "--family",
            "linear",
            "--export",
            str(exported),
            "--report-dir",
            str(tmp_path / "rep"),
        ],
    )
    assert result.exit_code == 0, result.output
    for method in ("fixed top-k", "global cosine cutoff", "global Platt scaling", "query-dependent calibrator"):
        assert method in result.output
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert set(report["methods"]) == {"top_k", "cosine_cutoff", "platt", "adapter"}
    # The calibrator's gain over each baseline, with the query-bootstrap interval around it.
    assert set(report["gains"]) == {"top_k", "cosine_cutoff", "platt"}
    for rows in report["gains"].values():
        assert [g["metric"] for g in rows] == ["precision_at_recall_80", "roc_auc"]
        assert all(g["low"] <= g["high"] and g["n_queries"] == report["queries"] for g in rows)
    assert "90% interval" in (tmp_path / "rep" / "report.md").read_text()
    assert (tmp_path / "rep" / "report_reliability.png").stat().st_size > 1000
    assert (tmp_path / "rep" / "report_pr.png").stat().st_size > 1000

    payload = json.loads(exported.read_text())
    assert (payload["embedding_model"], payload["embedding_dim"], payload["family"]) == (MODEL, 384, "linear")
    manifest = json.loads((data / "collections" / "labelled" / "manifest.json").read_text())
    assert manifest["calibration"] == payload  # stored with the collection, versioned
    assert payload["schema_version"] == SCHEMA_VERSION and payload["fitted_on"]["n_queries"] == 10

    result = runner.invoke(app, ["calibrate", "-c", "unlabelled", "--apply", str(exported), "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((data / "collections" / "unlabelled" / "manifest.json").read_text())
    assert manifest["calibration"]["alpha"] == payload["alpha"]

    result = runner.invoke(app, ["calibrate", "-c", "other", "--apply", str(exported), "--data-dir", str(data)])
    assert result.exit_code == 2
    assert "fitted for embedding model" in result.output and "bge-small" in result.output
    manifest = json.loads((data / "collections" / "other" / "manifest.json").read_text())
    assert manifest.get("calibration") is None


def test_shipped_calibration_installs_for_its_model_only(tmp_path: Path, beir_dir: Path, embedder) -> None:
    data = tmp_path / "data"
    index_file(data, "plain", beir_dir / "corpus.jsonl", embedder, model_name=MODEL, progress=False)
    Collection.create(data / "collections" / "other", CollectionConfig("other", "BAAI/bge-small-en-v1.5", 384)).close()
    runner = CliRunner()
    result = runner.invoke(app, ["calibrate", "-c", "plain", "--shipped", "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((data / "collections" / "plain" / "manifest.json").read_text())
    assert manifest["calibration"] == shipped_calibration(MODEL, 384)
    assert "holds long documents stored as chunks" not in result.output  # short passages: no chunks

    long_file = tmp_path / "long.jsonl"
    text = " ".join(f"Sentence {i} tells of another town by the river, its bridges and mills." for i in range(40))
    long_file.write_text(json.dumps({"_id": "long", "text": text}) + "\n")
    index_file(data, "long", long_file, embedder, model_name=MODEL, progress=False)
    result = runner.invoke(app, ["calibrate", "-c", "long", "--shipped", "--data-dir", str(data)])
    assert result.exit_code == 0 and "holds long documents stored as chunks" in result.output

    result = runner.invoke(app, ["calibrate", "-c", "other", "--shipped", "--data-dir", str(data)])
    assert result.exit_code == 2 and "ships none for embedding model 'BAAI/bge-small-en-v1.5'" in result.output
    result = runner.invoke(
        app, ["calibrate", "-c", "plain", "--shipped", "--dataset", str(beir_dir), "--data-dir", str(data)]
    )
    assert result.exit_code == 2 and "--dataset and --shipped" in result.output


def test_feedback_recorded_on_a_collection_fits_what_the_same_qrels_fit(tmp_path: Path, beir_dir: Path,
                                                                        embedder) -> None:
    """`--feedback` reads the judgments the feedback endpoint stores: same labels, same calibration."""
    data = tmp_path / "data"
    for name in ("from-qrels", "from-feedback", "no-feedback"):
        index_file(data, name, beir_dir / "corpus.jsonl", embedder, model_name=MODEL, progress=False)
    coll = Collection.open(data / "collections" / "from-feedback")
    queries = {q["_id"]: q["text"] for q in map(json.loads, (beir_dir / "queries.jsonl").read_text().splitlines())}
    qrels: dict[str, list[tuple[str, int]]] = {}
    for line in (beir_dir / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        qid, doc, grade = line.split("\t")
        qrels.setdefault(qid, []).append((doc, int(grade)))
    for qid, text in queries.items():  # in the dataset's order, which the CV folds follow
        coll.feedback.record(qid, text, qrels[qid])
    coll.close()

    runner = CliRunner()
    # the cheapest fit (equality is the point, not the fit): linear family, no coherence feature
    common = ["--data-dir", str(data), "--folds", "3", "--depth", "12", "--family", "linear", "--no-list-coherence"]
    by_qrels = runner.invoke(app, ["calibrate", "-c", "from-qrels", "--dataset", str(beir_dir), *common,
                                   "--report-dir", str(tmp_path / "r1")])
    by_feedback = runner.invoke(app, ["calibrate", "-c", "from-feedback", "--feedback", *common,
                                      "--report-dir", str(tmp_path / "r2")])
    assert by_qrels.exit_code == 0 and by_feedback.exit_code == 0, by_qrels.output + by_feedback.output
    fitted = [json.loads((data / "collections" / n / "manifest.json").read_text())["calibration"]
              for n in ("from-qrels", "from-feedback")]
    assert fitted[1]["fitted_on"]["dataset"] == "feedback"
    for payload in fitted:
        payload.pop("fitted_on")
        payload.pop("fitted_at", None)
    assert fitted[0] == fitted[1]

    empty = runner.invoke(app, ["calibrate", "-c", "no-feedback", "--feedback", *common])
    assert empty.exit_code == 2 and "no recorded judgments" in empty.output
    both = runner.invoke(app, ["calibrate", "-c", "no-feedback", "--feedback", "--dataset", str(beir_dir), *common])
    assert both.exit_code == 2 and "--dataset and --feedback" in both.output
