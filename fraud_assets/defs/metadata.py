"""Turning core results into metadata a person can read in the Dagster UI."""

import base64
import math

import dagster as dg
import pandas as pd
from pyspark.sql import types as T


def table(df: pd.DataFrame, max_rows: int = 200) -> dg.TableMetadataValue:
    """A Dagster table from a pandas frame (NaN shown as empty cells)."""
    records = []
    for row in df.head(max_rows).to_dict(orient="records"):
        clean = {}
        for key, value in row.items():
            if isinstance(value, float) and math.isnan(value):
                value = None
            elif hasattr(value, "isoformat"):
                value = value.isoformat()
            elif hasattr(value, "item"):
                value = value.item()
            clean[str(key)] = value
        records.append(dg.TableRecord(clean))
    columns = [
        dg.TableColumn(
            str(name),
            "float"
            if pd.api.types.is_float_dtype(dtype)
            else "int"
            if pd.api.types.is_integer_dtype(dtype)
            else "bool"
            if pd.api.types.is_bool_dtype(dtype)
            else "string",
        )
        for name, dtype in df.dtypes.items()
    ]
    return dg.MetadataValue.table(records=records, schema=dg.TableSchema(columns=columns))


def png(image: bytes, title: str) -> dg.MarkdownMetadataValue:
    """An inline PNG image (Dagster renders markdown data URIs in the asset view)."""
    encoded = base64.b64encode(image).decode("ascii")
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{encoded})")


def _spark_type_name(data_type: T.DataType) -> str:
    return data_type.simpleString()


def column_schema(schema: T.StructType) -> dg.TableSchema:
    """A table's ``dagster/column_schema``: each column of its named Spark schema.

    Not-null columns carry Dagster's ``nullable`` constraint; the type is Spark's name for it.
    """
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                field.name,
                _spark_type_name(field.dataType),
                constraints=dg.TableColumnConstraints(nullable=field.nullable),
            )
            for field in schema.fields
        ]
    )
