"""``asynctrack athena-ddl``: the Athena (Glue, Spark) table over a destination.

Partition projection computes the partitions from the query instead of reading
them from the catalogue, so new runs are queryable at once and no ``MSCK REPAIR
TABLE`` or crawler is ever needed. ``experiment`` and ``run`` are *injected*:
their values come from the query's ``WHERE experiment = '...' AND run = '...'``
(Athena requires both); ``date`` is a date range from 2024 to now.

The envelope's own ``experiment`` and ``run`` fields (the names as given, before
they were made safe for a path) are mapped to ``experiment_name`` and
``run_name``: Athena forbids a column named like a partition key. ``data`` and
``metadata`` are JSON text (OpenX JsonSerDe keeps a nested object declared as
``string`` as its JSON): use ``json_extract_scalar(data, '$.response...')``.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["athena_ddl", "create_table"]

_TABLE_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_FIRST_DATE: Final = "2024-01-01"


def create_table(destination: str, table: str) -> str:
    """The ``CREATE EXTERNAL TABLE`` statement for the events under ``destination``.

    Raises:
        ValueError: ``destination`` is not ``s3://bucket[/prefix]``, or ``table``
            is not a plain (optionally database-qualified) name.
    """
    if not destination.startswith("s3://") or not destination[5:].split("/", 1)[0]:
        raise ValueError(f"Athena reads S3: the destination must be s3://bucket/prefix, got {destination!r}")
    if not _TABLE_NAME.match(table):
        raise ValueError(f"table must be a name like events or mydb.events, got {table!r}")
    if "'" in destination:
        raise ValueError(f"a quote in the destination is not supported: {destination!r}")
    location = destination.rstrip("/") + "/"
    quoted = ".".join(f"`{part}`" for part in table.split("."))
    return f"""CREATE EXTERNAL TABLE IF NOT EXISTS {quoted} (
  `seq` bigint,
  `ts` double,
  `kind` string,
  `experiment_name` string,
  `run_name` string,
  `tracker` string,
  `run_id` string,
  `parent_run_id` string,
  `name` string,
  `duration` double,
  `tags` array<string>,
  `metadata` string,
  `data` string
)
PARTITIONED BY (`experiment` string, `run` string, `date` string)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
WITH SERDEPROPERTIES (
  'mapping.experiment_name' = 'experiment',
  'mapping.run_name' = 'run'
)
LOCATION '{location}'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.experiment.type' = 'injected',
  'projection.run.type' = 'injected',
  'projection.date.type' = 'date',
  'projection.date.format' = 'yyyy-MM-dd',
  'projection.date.range' = '{_FIRST_DATE},NOW',
  'projection.date.interval' = '1',
  'projection.date.interval.unit' = 'DAYS',
  'storage.location.template' = '{location}experiment=${{experiment}}/run=${{run}}/date=${{date}}/'
);
"""


def athena_ddl(destination: str, table: str) -> int:
    """Print the ``CREATE EXTERNAL TABLE`` for ``destination``."""
    from ._common import error

    try:
        print(create_table(destination, table), end="")
    except ValueError as exc:
        return error("athena-ddl", exc)
    return 0
