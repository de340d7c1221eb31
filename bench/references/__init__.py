"""Published results beside a run's own: reference curves read from CompressAI's results JSON
or a CSV, the ones bench ships (``bench/references/data``), and a run's export in the same
forms (``bench import``, ``bench export``, ``--reference``)."""

from bench.references.curve import COMPRESSAI_KEYS, PUBLISHED, ReferenceCurve, column_of
from bench.references.files import (
    IMPORTED_ENV,
    RUN_REFERENCES,
    from_compressai,
    imported_home,
    read_compressai,
    read_csv_curves,
    read_file,
    read_references,
    resolve,
    shipped,
    to_compressai,
    write_csv_curves,
    write_references,
)

__all__ = [
    "COMPRESSAI_KEYS",
    "IMPORTED_ENV",
    "PUBLISHED",
    "RUN_REFERENCES",
    "ReferenceCurve",
    "column_of",
    "from_compressai",
    "imported_home",
    "read_compressai",
    "read_csv_curves",
    "read_file",
    "read_references",
    "resolve",
    "shipped",
    "to_compressai",
    "write_csv_curves",
    "write_references",
]
