"""`rrs backup` and `rrs restore`: consistent copies of a collection, served or not, and restores."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.main import app


@app.command("backup")
def backup(
    collection: str = typer.Option(..., "--collection", "-c", help="Collection (or alias) to back up."),
    out: Path = typer.Option(None, help="Backups folder (default RRS_BACKUP_DIR, else <data-dir>/backups)."),
    data_dir: Path = typer.Option(None, help="Data directory (default RRS_DATA_DIR, as the server)."),
    index: bool = typer.Option(True, "--index/--no-index",
                               help="Keep the ANN index snapshot (restores load it instead of rebuilding)."),
) -> None:
    """Copy a collection's store as of one moment; safe while the server writes to it."""
    from indexing.aliases import resolve
    from indexing.backup import backup_folder
    from indexing.collection import STORE_FILE, validate_name
    from indexing.errors import IndexingError
    from service.settings import Settings

    settings = Settings(**({"data_dir": data_dir} if data_dir else {}))
    root = Path(settings.data_dir) / "collections"
    try:
        name = resolve(root, validate_name(collection))
        if not (root / name / STORE_FILE).exists():
            raise IndexingError(f"collection {name!r} does not exist under {root}")
        backups = out or settings.backups_path
        info = backup_folder(root / name, name, backups, include_index=index)
    except (IndexingError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{info['id']}: {info['documents']} documents, {info['bytes']:,} bytes, in {backups / info['id']}")


@app.command("restore")
def restore(
    backup_dir: Path = typer.Option(..., "--backup", help="A backup folder (<backups>/<collection>/<stamp>)."),
    collection: str = typer.Option(..., "--collection", "-c", help="New collection to restore into."),
    data_dir: Path = typer.Option(None, help="Data directory (default RRS_DATA_DIR, as the server)."),
) -> None:
    """Restore a backup as a new collection (checksums checked; its index snapshot loaded, else rebuilt)."""
    from indexing.backup import fill_from_backup, read_backup
    from indexing.catalog import CollectionCatalog
    from indexing.errors import IndexingError
    from service.settings import Settings

    catalog = CollectionCatalog(data_dir or Settings().data_dir)
    try:
        info = read_backup(backup_dir)
        coll = catalog.adopt(collection, lambda target: fill_from_backup(info, backup_dir, target, collection))
        count = coll.store.count()
    except (IndexingError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        catalog.close()
    typer.echo(f"{collection}: restored {count} documents from {info['id']}. A running server picks it up with "
               f"POST /v1/collections/{collection}/reload")
