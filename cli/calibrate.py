"""`rrs calibrate`: fit the relevance calibrator on a labelled collection, report, store, export/apply."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cli.main import app


@app.command("calibrate")
def calibrate(
    collection: str = typer.Option(..., "--collection", "-c", help="Collection to calibrate."),
    dataset: Path = typer.Option(
        None,
        "--dataset",
        "-d",
        exists=True,
        file_okay=False,
        help="BEIR folder (queries.jsonl, qrels/test.tsv) whose corpus the collection holds.",
    ),
    target_precision: float = typer.Option(
        None, min=0.0, max=1.0, help="Threshold for this precision (default: the max-F1 threshold)."
    ),
    family: str = typer.Option(None, help="linear | sqrt | quadratic | power (default: chosen by CV)."),
    export: Path = typer.Option(None, "--export", help="Write the calibration (JSON) to this file."),
    apply: Path = typer.Option(
        None, "--apply", exists=True, dir_okay=False, help="Install a calibration file on the collection."
    ),
    shipped: bool = typer.Option(
        False, "--shipped", help="Install the calibration rrs ships for the collection's embedding model "
        "(fitted on MS MARCO; for collections without labels of their own)."
    ),
    feedback: bool = typer.Option(
        False, "--feedback", help="Fit from the judgments recorded with POST /v1/collections/NAME/feedback."
    ),
    min_grade: int = typer.Option(2, help="Smallest qrels grade counted as relevant."),
    depth: int = typer.Option(100, min=2, help="Candidates per query (the calibrator's top-n)."),
    folds: int = typer.Option(5, min=2, help="Query-grouped cross-validation folds."),
    seed: int = typer.Option(0),
    report_dir: Path = typer.Option(None, help="Where the report goes (default: <collection>/calibration/)."),
    data_dir: Path = typer.Option(None, help="Data directory (default RRS_DATA_DIR, as the server)."),
    device: str = typer.Option("auto", help="Device for embedding the queries."),
    topic_density: bool = typer.Option(
        False,
        help="Also offer CV the topic-density feature (one more index search per calibrated query when serving).",
    ),
    list_coherence: bool = typer.Option(
        True,
        help="Offer CV the list-coherence feature (reads the candidates' stored vectors when serving; no extra "
        "search). Ignored with --topic-density.",
    ),
    rank_term: bool = typer.Option(
        True,
        help="Give every calibrator the rank term (log of the number of candidates above a hit); it keeps the "
        "head of a narrow-topic list and never reorders a query's hits.",
    ),
    score_shape: bool = typer.Option(
        False,
        help="Offer list coherence beside the six score-shape features instead of alone (the earlier default: "
        "more precise at low recall on MS MARCO, but more queries left empty at a strict threshold).",
    ),
) -> None:
    """Fit (--dataset or --feedback), install (--apply FILE or --shipped) or export (--export) a calibration.

    A running server picks a new calibration up with POST /v1/collections/NAME/reload.
    """
    from indexing.calibration.relevance import CalibrationError
    from indexing.calibration.serving import install_calibration, stored_calibration
    from indexing.calibration.shipped import shipped_calibration
    from indexing.collection import Collection, validate_name
    from indexing.errors import IndexingError
    from indexing.snapshot import SnapshotError
    from service.settings import Settings

    sources = [flag for flag, given in (("--dataset", dataset), ("--feedback", feedback), ("--apply", apply),
                                        ("--shipped", shipped)) if given]
    if not sources and export is None:
        typer.echo("error: give --dataset or --feedback (fit), --apply FILE or --shipped (install) or --export FILE",
                   err=True)
        raise typer.Exit(2)
    if len(sources) > 1:
        typer.echo(f"error: {' and '.join(sources)} each set the calibration: choose one", err=True)
        raise typer.Exit(2)
    from indexing.aliases import resolve as resolve_alias

    try:
        root = Path(data_dir or Settings().data_dir) / "collections"
        folder = root / resolve_alias(root, validate_name(collection))
        if not folder.is_dir():
            raise IndexingError(f"collection {collection!r} does not exist under {folder.parent}")
        coll = Collection.open(folder)
    except (IndexingError, SnapshotError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        if apply is not None:
            calibration = install_calibration(coll, json.loads(apply.read_text()))
            typer.echo(f"{collection}: installed the calibration from {apply} (threshold {calibration.threshold:.3f})")
        elif shipped:
            data = shipped_calibration(coll.config.model, coll.config.dim)
            if data is None:
                raise CalibrationError(
                    f"calibration: rrs ships none for embedding model {coll.config.model!r} ({coll.config.dim}-d); "
                    "fit one with --dataset"
                )
            calibration = install_calibration(coll, data)
            typer.echo(f"{collection}: installed the shipped calibration (threshold {calibration.threshold:.3f})")
            if coll.store.chunk_count():
                typer.echo(
                    f"note: {collection!r} holds long documents stored as chunks; the shipped calibration was fitted "
                    "on passages and reads their relevance too low (it keeps fewer of the relevant hits: "
                    "docs/BENCHMARKS.md, 'Calibrated relevance on chunked long documents'). Fit one on this "
                    "collection's own labels with --feedback or --dataset.",
                    err=True,
                )
        elif dataset is not None or feedback:
            labels = _dataset_labels(dataset) if dataset is not None else _feedback_labels(coll)
            calibration = _fit(
                coll,
                labels,
                str(dataset) if dataset is not None else "feedback",
                target_precision,
                family,
                min_grade,
                depth,
                folds,
                seed,
                report_dir or folder / "calibration",
                device,
                topic_density,
                list_coherence,
                rank_term,
                score_shape,
            )
            install_calibration(coll, calibration)
            typer.echo(f"{collection}: calibration stored in {folder / 'manifest.json'}")
        if export is not None:
            data = stored_calibration(coll)
            if data is None:
                raise CalibrationError(f"calibration: collection {collection!r} has none to export")
            export.write_text(json.dumps(data, indent=2))
            typer.echo(f"{collection}: calibration written to {export}")
    except (CalibrationError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        coll.close()


def _dataset_labels(dataset: Path) -> tuple[list[dict], dict[str, dict[str, int]]]:
    """Judged queries ({"_id", "text"} rows) and graded qrels of a BEIR folder."""
    from indexing.batch import read_jsonl
    from indexing.calibration.dataset import read_qrels

    queries_path, qrels_path = dataset / "queries.jsonl", dataset / "qrels" / "test.tsv"
    if not queries_path.exists() or not qrels_path.exists():
        raise ValueError(f"dataset: {dataset} needs queries.jsonl and qrels/test.tsv")
    qrels = read_qrels(qrels_path)
    rows = [r for r in read_jsonl(queries_path) if str(r["_id"]) in qrels]
    if not rows:
        raise ValueError(f"dataset: no query in {queries_path} has judgments in {qrels_path}")
    return rows, qrels


def _feedback_labels(coll) -> tuple[list[dict], dict[str, dict[str, int]]]:  # noqa: ANN001
    """The same, from the judgments the collection's feedback endpoint recorded."""
    texts, qrels = coll.feedback.labels()
    if not texts:
        raise ValueError(f"feedback: collection {coll.name!r} has no recorded judgments "
                         "(POST /v1/collections/NAME/feedback)")
    return [{"_id": qid, "text": text} for qid, text in texts.items()], qrels


def _fit(
    coll,
    labels: tuple[list[dict], dict[str, dict[str, int]]],
    source: str,
    target_precision: float | None,
    family: str | None,
    min_grade: int,  # noqa: ANN001
    depth: int,
    folds: int,
    seed: int,
    report_dir: Path,
    device: str,
    topic_density: bool = False,
    list_coherence: bool = True,
    rank_term: bool = True,
    score_shape: bool = False,
):  # noqa: ANN202
    """Retrieve top-`depth` for every judged query, cross-validate all methods, fit the calibrator."""
    import numpy as np

    from indexing.calibration.dataset import labelled_queries
    from indexing.calibration.evaluation import (
        METHODS,
        coherence_grid,
        cross_validate,
        default_grid,
        topic_density_grid,
    )
    from indexing.calibration.families import FAMILIES
    from indexing.calibration.features import TOPIC_SIZES
    from indexing.calibration.relevance import fit_calibration
    from indexing.calibration.report import gains, gains_table, markdown_table, write_report
    from indexing.calibration.serving import coherence_tails, topic_neighbour_scores
    from models.embedder import load_space_embedder

    if family is not None and family not in FAMILIES:
        raise ValueError(f"family: one of {', '.join(FAMILIES)}")
    rows, qrels = labels
    encoder = load_space_embedder(coll.config.model, device=device)
    vectors = np.asarray(encoder.encode([r["text"] for r in rows], input_type="query"), dtype=np.float32)
    near = coll.nearest(vectors, depth)  # documents, each scored by its best chunk
    scores, doc_vids, vids = near.scores, near.doc_vids, near.vids
    docs = coll.store.get_by_vids(np.unique(doc_vids[doc_vids >= 0]).tolist())
    cand_ids = [[docs[int(v)].id for v in row if v >= 0 and int(v) in docs] for row in doc_vids]
    cand_scores = [s[(v >= 0) & np.isin(v, list(docs))] for s, v in zip(scores, doc_vids, strict=True)]
    queries = labelled_queries([str(r["_id"]) for r in rows], vectors, cand_ids, cand_scores, qrels, min_grade)
    if len(queries) < folds:
        raise ValueError(f"{'feedback' if source == 'feedback' else 'dataset'}: {len(queries)} queries have a "
                         f"relevant candidate; need at least {folds}")
    families = (family,) if family else ("linear", "power")
    grid = default_grid(families, n_candidates=depth, rank_term=rank_term)
    sizes = tuple(m for m in TOPIC_SIZES if m <= depth)
    row_of = {str(r["_id"]): i for i, r in enumerate(rows)}
    if topic_density:
        for q in queries:
            q.topic_neighbours = topic_neighbour_scores(coll, vids[row_of[q.query_id]], sizes, depth)
        grid = topic_density_grid(families, depth, sizes, rank_term)
    elif list_coherence:
        for q in queries:
            ranked = vids[row_of[q.query_id]]
            q.coherence_tails = coherence_tails(coll, ranked[ranked >= 0], sizes)
        grid = coherence_grid(families, depth, sizes, rank_term, with_shape=score_shape)
    typer.echo(
        f"{coll.name}: {len(queries)} labelled queries, {sum(len(q.scores) for q in queries)} pairs; "
        f"{folds}-fold CV by query over {len(grid)} calibrator settings ..."
    )
    reports = [cross_validate(queries, m, folds, seed, target_precision, grid) for m in METHODS]
    typer.echo(markdown_table(reports))
    gain_rows = gains(reports, [q.labels for q in queries])
    typer.echo(gains_table(gain_rows))
    context = {
        "collection": coll.name,
        "model": coll.config.model,
        "dataset": source,
        "queries": len(queries),
        "folds": folds,
        "seed": seed,
        "target_precision": target_precision,
    }
    paths = write_report(reports, [q.labels for q in queries], report_dir, "report", context, gain_rows)
    typer.echo("report: " + ", ".join(str(p) for p in paths.values()))
    cv = {r.name: r.metrics.as_dict() for r in reports}
    return fit_calibration(
        queries,
        coll.config.model,
        coll.config.dim,
        grid,
        target_precision,
        None,
        folds,
        seed,
        fitted_on={"collection": coll.name, "dataset": source, "min_grade": min_grade, "cv": cv},
    )
