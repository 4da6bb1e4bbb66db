"""Public datasets `bench data fetch` may download: only those whose licence allows it, each file pinned.

A file whose sha256 is not yet pinned (None) is fetched only with --allow-unpinned, and the digest it got is
printed so a maintainer can pin it here. FairFace (Google Drive, needs a browser confirm), UTKFace (non-commercial,
Google Drive) and LFW (no licence grant for redistribution tooling) are not listed: `bench data add` reads them
once downloaded by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import UnknownIdError


@dataclass(frozen=True)
class RemoteFile:
    url: str
    filename: str
    sha256: str | None      # None: not pinned yet (see module docstring)
    extract: bool = False   # unpack a .zip into the destination after verification


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    title: str
    licence: str
    citation: str
    homepage: str
    files: tuple[RemoteFile, ...]
    note: str = ""


CATALOG: dict[str, CatalogEntry] = {
    entry.name: entry
    for entry in (
        CatalogEntry(
            name="london-frl-original",
            title="Face Research Lab London Set v5, neutral frontal photos, 1350 px originals",
            licence="CC BY 4.0",
            citation="DeBruine, L. & Jones, B. (2017). Face Research Lab London Set. figshare. "
            "doi:10.6084/m9.figshare.5047666.v5",
            homepage="https://doi.org/10.6084/m9.figshare.5047666.v5",
            files=(RemoteFile("https://figshare.com/ndownloader/files/8541961", "neutral_front.zip", None, True),),
            note="The built-in london-frl sample is a 640 px copy with labels.csv; the originals carry no labels.csv.",
        ),
    )
}


def catalog_entry(name: str) -> CatalogEntry:
    if name not in CATALOG:
        raise UnknownIdError("fetchable dataset", name, list(CATALOG))
    return CATALOG[name]
